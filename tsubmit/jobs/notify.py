"""Notifications: a message to the user's endpoints when a job changes state.

The endpoints are apprise URLs (`--notify URL`, spec key `notify`, or the
default list of the user's config file): apprise is one library that speaks
Slack, e-mail, Discord, ntfy, Matrix, Telegram, plain JSON webhooks and about
a hundred services more, each by a URL, so tsubmit carries no client of its
own for any of them.

A message is driven by what tsubmit sees of the job. The tsubmit that refreshes
a job from its nodes (status, list, logs -f, run --wait; a watcher later) and
sees it end, or the `run --queue` that starts a queued job, records the
message in the job's record in the same write as the new state, so one
process records it once; then it sends what is pending. A message that cannot
be delivered (the endpoint is down, answers an error or takes longer than
TIMEOUT) stays pending, is tried again by each later refresh and dropped a day
after its event. Sending never changes a job's state nor an exit code.

The URLs hold secrets (tokens, passwords): they stay in the local store
(mode 0600), are never sent to the nodes, and wherever tsubmit shows them
they are masked (mask()).
"""

import hashlib
import sys
import threading
import time

from ..errors import UsageError
from ..model import job as states

# The events a job may notify of. "end" stands for both ends. "started" is a
# queued job's start only: any other job starts while its submitter watches.
# "restarted", "hung" and "lost_node" come from the watcher acting on the job
# (tsubmit/jobs/recovery.py): it records them where they happen (record()).
EVENTS = ("started", "succeeded", "failed", "restarted", "hung", "lost_node")
GROUPS = {"end": ("succeeded", "failed")}
# Issue 29's default, end, restart, hang and lost node, and a queued job's
# start as before those events existed (a user who queued wants to hear it).
DEFAULT_EVENTS = EVENTS
TIMEOUT = 10.0  # seconds for one message to reach one endpoint
KEEP_FOR = 86400.0  # an undelivered message is dropped this long after its event
TAIL_LINES = 20  # of the failed rank's log, in a failure's message


def mask(url: str) -> str:
    """URL as tsubmit shows it: its scheme and a digest that tells two URLs apart."""
    scheme = url.partition("://")[0] if "://" in url else "?"
    return f"{scheme}://*** ({hashlib.sha256(url.encode()).hexdigest()[:6]})"


def check_url(url: str, origin: str = "--notify") -> str:
    """URL if apprise can send to it; else a UsageError naming the scheme or the URL (masked)."""
    import apprise

    scheme, sep, _ = url.partition("://")
    if not sep:
        raise UsageError(f"{origin}: {mask(url)} is not a notification URL (expected SCHEME://..., "
                         "e.g. ntfy://topic, mailto://user:password@example.com, json://host:port)")
    if scheme.lower() not in apprise.manager_plugins.NotificationManager().schemas():
        raise UsageError(f"{origin}: unknown notification scheme {scheme!r} in {mask(url)}; see "
                         "https://github.com/caronc/apprise/wiki for the URLs apprise supports")
    if not apprise.Apprise().add(url):
        raise UsageError(f"{origin}: malformed {scheme}:// notification URL {mask(url)}; see "
                         f"https://github.com/caronc/apprise/wiki for its form")
    return url


def settings(urls: list[str] | None, events: list[str] | None) -> dict | None:
    """A job's notification settings ({urls, on}) from its spec's notify and
    notify_on, validated; None without URLs."""
    if not urls:
        return None
    chosen = []
    for word in events if events is not None else DEFAULT_EVENTS:
        for event in GROUPS.get(word, (word,)):
            if event not in EVENTS:
                raise UsageError(f"--notify-on: unknown event {word!r}; choose from "
                                 f"{', '.join((*EVENTS, *GROUPS))}")
            chosen.append(event)
    return {"urls": [check_url(url) for url in dict.fromkeys(urls)], "on": list(dict.fromkeys(chosen))}


def wants(job, event: str) -> bool:
    return event in (job.extras.get("notify") or {}).get("on", ())


# ---------------------------------------------------------------- what a message says


def leased_gpus(job) -> int:
    """GPUs of every node together: each rank's (--gpus, else all of its node's)."""
    return sum(job.gpus if job.gpus is not None else (rank.nproc or 0) for rank in job.ranks)


def wall_time(job) -> float:
    """The time the job's attempts ran: the ended ones' (job.attempts) and this one's."""
    earlier = sum(max(0.0, record["ended_at"] - record["started_at"]) for record in job.attempts
                  if record["attempt"] != job.attempt and record.get("started_at") and record.get("ended_at"))
    started = min((rank.started_at for rank in job.ranks if rank.started_at), default=None)
    if started is None:
        return earlier
    return earlier + max(0.0, (job.ended_at or time.time()) - started)


def gpu_hours(job) -> float:
    """Leased GPUs x nodes x wall time."""
    return leased_gpus(job) * wall_time(job) / 3600


def compose(job, event: str, tails: dict[int, list[str]] | None = None, *, cause: str | None = None,
            hosts: tuple[str, ...] | list[str] = (), ranks: list[int] | None = None,
            report: dict | None = None) -> dict:
    """The message of EVENT: {title, body}. TAILS are the failed ranks' last log
    lines; CAUSE why the attempt before a restart ended; HOSTS the lost nodes
    (default: those whose ranks are unreachable); RANKS the hung ranks (default:
    those the post-mortem found running) and REPORT the hang's post-mortem
    (default: the one kept for the job's attempt)."""
    from ..output import counted, duration

    lines = [f"job: {job.name} ({job.id})", f"cluster: {job.cluster}", f"state: {event}",
             f"attempt: {job.attempt}", f"wall time: {duration(wall_time(job))}",
             f"GPU-hours: {gpu_hours(job):.2f} ({counted(leased_gpus(job), 'GPU')} on "
             f"{counted(len(job.ranks), 'node')})"]
    title = f"tsubmit: job {job.name} ({job.id}) {event.replace('_', ' ')}"
    policy = job.recovery
    rank = job.first_failure() if event == "failed" else None
    if rank is not None:
        reason = rank.reason()
        title += f": rank {rank.rank} on {rank.host} {reason}"
        lines += [f"first failed rank: {rank.rank} on {rank.host} (address {rank.address}), {reason}",
                  f"exit code: {rank.exit_code}"]
        if (rank.cause or {}).get("error"):
            lines.append(f"error: {rank.cause['error']}")
        if rank.state == states.LOST and job.message:  # why: its node was lost, say
            lines.append(f"cause: {job.message}")
        tail = (tails or {}).get(rank.rank)
        if tail:
            lines += [f"last {counted(len(tail), 'line')} of rank {rank.rank}'s log:", *tail]
    elif event == "failed" and job.message:  # no rank failed: it hung, or lost its nodes
        title += f": {job.message}"
        lines.append(f"cause: {job.message}")
    elif event == "started":
        lines.append("it waited in the queue for its GPUs and started")
    elif event == "restarted":
        from . import attempts

        cause = cause or job.restart_cause()
        title += f" as attempt {job.attempt}" + (f" after {cause}" if cause else "")
        lines += [f"cause: {cause or 'not recorded'}",
                  f"restarts: {attempts.restarts_used(job)} of {attempts.restarts(job)}"]
    elif event == "lost_node":
        addresses = {r.host: r.address for r in job.ranks}
        lost = list(hosts) or [r.host for r in job.ranks if r.state == states.UNREACHABLE]
        shown = [f"{host} (address {addresses.get(host, 'unknown')})" for host in lost]
        title += f": {', '.join(shown)}"
        timeout = policy.get("node_timeout")
        silent = f" for longer than {duration(timeout)} (--node-timeout)" if timeout else ""
        lines += [f"lost node: {node}, rank {', '.join(str(r.rank) for r in job.ranks if r.host == host)}, "
                  f"silent{silent}" for node, host in zip(shown, lost, strict=True)]
    elif event == "hung":
        hang = _hang_lines(job, ranks, report, policy.get("hang_timeout"))
        title += f": {hang[0].removeprefix('hung: ')}"
        lines += hang
    return {"title": title, "body": "\n".join(lines)}


def _hang_lines(job, ranks: list[int] | None, report: dict | None, timeout: float | None) -> list[str]:
    """The hung ranks and where their stacks stand (postmortem.summary)."""
    from ..output import duration
    from . import postmortem

    report = report or postmortem.load(job, job.attempt)
    if ranks is None:
        ranks = [r["rank"] for r in (report or {}).get("ranks", []) if r["state"] == states.RUNNING]
    silent = f" for {duration(timeout)} (--hang-timeout)" if timeout else ""
    lines = [f"hung: rank {', '.join(map(str, ranks)) or '?'}: log silent{silent}"]
    if report is None:
        return [*lines, "no post-mortem was kept of this attempt"]
    wanted = {r["rank"] for r in report["ranks"] if r["rank"] in ranks}
    summary = [line for entry, line in zip(report["ranks"], postmortem.summary(report), strict=True)
               if entry["rank"] in wanted]
    return [*lines, "where their stacks stand:", *summary,
            f"the whole post-mortem: tsubmit postmortem {job.id} --attempt {report['attempt']}"]


# ---------------------------------------------------------------- pending messages


def record(job, event: str, tails: dict[int, list[str]] | None = None, **details) -> bool:
    """Add EVENT's message to JOB's pending ones if the job notifies of it (the
    caller saves the job, and the next refresh, or deliver(), sends it).
    Whether it did. DETAILS go to compose(): where the event happens,

        notify.record(job, "restarted", cause=cause)  # once the next attempt launched
        notify.record(job, "hung", ranks=[1])          # after postmortem.collect(job, "hang")
        notify.record(job, "lost_node", hosts=["node2"])
    """
    notify = job.extras.get("notify")
    if not notify or event not in notify.get("on", ()):
        return False
    notify.setdefault("pending", []).append({
        "event": event, "at": time.time(), **compose(job, event, tails, **details),
        "to": list(range(len(notify["urls"]))), "tries": 0, "error": None})
    return True


def observe(job, before: str, tails: dict[int, list[str]] | None = None) -> bool:
    """Record the message of the state JOB reached from BEFORE, if it is an event."""
    from .attempts import awaits_restart

    if job.state == before or job.state not in (states.SUCCEEDED, states.FAILED):
        return False
    if job.state == states.FAILED and awaits_restart(job):
        # Not the job's end yet: the watcher restarts it, or says it failed
        # (recovery._fail), with these tails (held_tails): the workers' lines.
        if job.extras.get("notify"):
            job.extras["notify"]["held_tails"] = {"attempt": job.attempt, "tails": tails or {}}
        return False
    return record(job, job.state, tails)


def held_tails(job) -> dict[int, list[str]]:
    """The failed ranks' last log lines that the refresh which saw JOB's current
    attempt fail read (as rank_status.py cuts them: under torchrun, the
    workers' lines before torchrun's own traceback), held for the message of
    the job's failure if no restart follows."""
    held = (job.extras.get("notify") or {}).get("held_tails") or {}
    if held.get("attempt") != job.attempt:
        return {}
    return {int(rank): lines for rank, lines in held["tails"].items() if lines}


def pending(job) -> list[dict]:
    return (job.extras.get("notify") or {}).get("pending") or []


def deliver(store, jobs, *, say=None) -> None:
    """Send every pending message of JOBS, all at once, each to each of its
    endpoints within TIMEOUT; what was delivered or is older than KEEP_FOR
    leaves the record, the rest stays for the next refresh. SAY (a callable
    taking a line) hears of each failure; stderr by default."""
    say = say or _stderr
    work = [job for job in jobs if pending(job)]
    if not work:
        return
    now = time.time()
    sends = []
    for job in work:
        urls = job.extras["notify"]["urls"]
        for message in pending(job):
            if now - message["at"] < KEEP_FOR:
                sends += [(job, message, index, urls[index]) for index in message["to"]]
    results = _send_all([(url, message["title"], message["body"]) for _, message, _, url in sends])
    outcome: dict[str, dict[tuple, tuple]] = {}
    for (job, message, index, url), error in zip(sends, results, strict=True):
        outcome.setdefault(job.id, {})[(message["event"], message["at"], index)] = (error, url)
        if error:
            say(f"tsubmit: the {message['event']} notification of job {job.id} to {mask(url)} was not "
                f"delivered ({error}); tried again at the next refresh until a day has passed")
    for job in work:
        for message in pending(job):
            if now - message["at"] >= KEEP_FOR:
                say(f"tsubmit: dropped the {message['event']} notification of job {job.id}: not "
                    f"delivered within a day ({message.get('error')})")
        _settle(store, job, outcome.get(job.id, {}), now)


def _settle(store, job, outcome: dict[tuple, tuple], now: float) -> None:
    """Write what was delivered into JOB's record; again over a newer record
    when another tsubmit saved the job meanwhile (never losing its state)."""
    for _ in range(10):
        kept = []
        for message in pending(job):
            if now - message["at"] >= KEEP_FOR:
                continue
            key = (message["event"], message["at"])
            results = {index: outcome.get((*key, index)) for index in message["to"]}
            if not any(results.values()):
                kept.append(message)  # not tried by this process
                continue
            failed = [index for index, result in results.items() if result is None or result[0]]
            if failed:
                errors = [result[0] for result in results.values() if result and result[0]]
                kept.append({**message, "to": failed, "tries": message["tries"] + 1,
                             "error": errors[0] if errors else message["error"]})
        job.extras["notify"]["pending"] = kept
        if not store.save_if_unchanged(job):
            return


def _send_all(sends: list[tuple[str, str, str]]) -> list[str | None]:
    """Send each (url, title, body) in a thread of its own; each result is None
    when delivered, else why not (apprise's own word). None of them takes
    longer than TIMEOUT. apprise logs nothing unless asked (its NullHandler)."""
    results: list[str | None] = [f"no answer within {TIMEOUT:g} s"] * len(sends)

    def send(index: int, url: str, title: str, body: str) -> None:
        import apprise

        try:
            sender = apprise.Apprise()
            if not sender.add(url):
                results[index] = "apprise cannot use this URL"
                return
            result = sender.notify(title=title, body=body)
            if result:
                results[index] = None
            else:
                logs = result.logs() if hasattr(result, "logs") else []  # an older apprise's: a bool
                problems = [entry.message for entry in logs if entry.level in ("WARNING", "ERROR")]
                results[index] = (problems[-1] if problems else "the endpoint refused it")[:300]
        except Exception as error:  # a notification never fails tsubmit
            results[index] = f"{type(error).__name__}: {error}"[:300]

    threads = [threading.Thread(target=send, args=(i, *item), daemon=True) for i, item in enumerate(sends)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return results


def send_test(url: str) -> None:
    """`tsubmit notify test URL`: a test message, or a TsubmitError saying why it failed."""
    from ..errors import LaunchError

    check_url(url, "notify test")
    [error] = _send_all([(url, "tsubmit: test notification",
                          "This is a test message from tsubmit: notifications to this URL work.")])
    if error:
        raise LaunchError(f"not delivered: {error}")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def public(notify: dict) -> dict:
    """A job's notification settings as tsubmit shows them: URLs masked, pending
    messages by event, time, tries and error."""
    return {"urls": [mask(url) for url in notify.get("urls", [])], "on": notify.get("on", []),
            "pending": [{"event": m["event"], "at": m["at"], "tries": m["tries"], "error": m["error"],
                         "to": [mask(notify["urls"][i]) for i in m["to"]]}
                        for m in notify.get("pending") or []]}
