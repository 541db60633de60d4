"""Job lifecycle: refresh states from the nodes, stop, delete, wait (restart is
a launch: tsubmit/jobs/run.py), and follow: the logs streamed while waiting.

The nodes are the truth and the store is a cache of what they said:

- a job is refreshed while any rank may still run, whatever its aggregate
  state (a failed job with live ranks, a stop that could not reach a node);
- a refresh writes what it read only where nobody saved the job since it was
  loaded (JobStore.save_if_unchanged), and a rank whose launch is still in
  flight (its launcher lives) is not judged by the files it has not yet got;
- stop, delete and restart act on every node whatever the record says, and
  what they could not do on a node that did not answer stays recorded as
  pending (Job.pending) until a later stop, status or list finishes it there.

Every remote step is a playbook run. Refreshing any number of jobs is one
run of status.yml over the union of their hosts, one task per host.
"""

import json
import time
from collections import defaultdict
from pathlib import Path

from ..local import kept_inventories, kept_logs
from ..local.store import JobStore
from ..model import executors, layout, states
from ..model.job import Job, Rank
from ..nodes.actions import FAILURE_GRACE, Acted, act, every_host, launcher_alive
from ..nodes.ansible_run import run_playbook
from . import attempts, notify, postmortem

STATUS_TASK = "Read the state of every rank on the node"


def _sources(jobs: list[Job]) -> list[str]:
    return list(dict.fromkeys(source for job in jobs for source in job.inventory["sources"]))


# ---------------------------------------------------------------- refresh


def refresh(store: JobStore, jobs: list[Job], *, skip_hosts: frozenset[str] = frozenset(),
            verbose: int = 0) -> list[Job]:
    """Bring the jobs among JOBS that may still run up to date with their nodes:
    finish what is pending on nodes that answer again, read every rank, and
    stop the other ranks of a job that failed (unless it keeps going).
    SKIP_HOSTS are not asked: what is recorded of them stays, pending there.
    Returns JOBS but those whose pending delete was finished: they are
    forgotten, and their copies say so (state DELETED)."""
    live = [job for job in jobs if job.may_run()]
    if live:
        # Jobs refreshed only for what an earlier attempt left on a lost node: their ranks are read no more.
        left_only = [job for job in live if not job.pending and not job.ranks_may_run()]
        for job in live:
            if job.pending:
                _finish_pending(store, job, skip_hosts, verbose=verbose)
            _stop_left_behind(store, job, skip_hosts, verbose=verbose)
        if left_only:
            store.save_if_unchanged(*left_only)
        read_no_more = {job.id for job in left_only}
        live = [job for job in live if job.state != states.DELETED and job.id not in read_no_more]
        leftovers = _read(store, live, skip_hosts, verbose=verbose) if live else {}
        for job in live:
            if job.state == states.FAILED and not postmortem.exists(job):
                postmortem.collect(job, "failed", verbose=verbose)  # before anything is stopped
            if _should_stop_the_rest(job, leftovers[job.id]):
                _stop_the_rest(store, job, leftovers[job.id], verbose=verbose)
    jobs = [job for job in jobs if job.state != states.DELETED]
    notify.deliver(store, jobs)  # what this refresh or an earlier one could not send
    return jobs


def _read(store: JobStore, jobs: list[Job], skip_hosts: frozenset[str] = frozenset(), *,
          verbose: int = 0) -> dict[str, set[str]]:
    """One status run over the jobs' nodes but SKIP_HOSTS; the reports become
    the jobs' states. Returns, by job, the hosts where a rank that ended left
    processes behind (the workers of a torchrun killed with -9, a daemon)."""

    wanted: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        tail = notify.TAIL_LINES if notify.wants(job, states.FAILED) else 0  # for the message
        for rank in job.ranks:
            if rank.host not in skip_hosts:
                live = rank.state in states.LIVE_RANK_STATES
                wanted[rank.host].append({"key": f"{job.id}:{rank.rank}",
                                          "dir": layout.attempt_dir(job.id, rank.rank, job.attempt),
                                          "marker": layout.marker(job.id, rank.rank, job.attempt),
                                          "tail": tail,
                                          # What the log gained, kept here: a node may be lost.
                                          "keep": kept_logs.KEEP_BYTES if live else 0,
                                          "keep_from": kept_logs.end(job.id, rank.rank, job.attempt)
                                          if live else 0,
                                          "keep_live": live and attempts.refreshed_by_watch(job)})
    outcomes = {}
    asked_at = time.time()
    if wanted:
        vault_files = {job.inventory.get("vault_password_file") for job in jobs} - {None}
        outcomes = run_playbook("status", _sources(jobs),
                                {host: {"status_ranks": ranks} for host, ranks in wanted.items()},
                                {}, verbose=verbose, vault_password_file=min(vault_files, default=None)).hosts
        store.note_contact({host for host, outcome in outcomes.items() if outcome.status != "unreachable"},
                           {host for host, outcome in outcomes.items() if outcome.status == "unreachable"})
    leftovers: dict[str, set[str]] = {job.id: set() for job in jobs}
    for job in jobs:
        in_flight = launcher_alive(job)
        before, tails = job.state, {}
        for rank in job.ranks:
            outcome = outcomes.get(rank.host)
            if outcome is None or outcome.status != "ok":
                if rank.state in states.LIVE_RANK_STATES:
                    rank.move_to(states.UNREACHABLE)
                    rank.unreachable_since = rank.unreachable_since or asked_at
                continue
            report = _parse(outcome.results.get(STATUS_TASK, {})).get(f"{job.id}:{rank.rank}")
            if report is not None:
                _apply(rank, report, job.attempt, in_flight)
                tails[rank.rank] = report.get("tail")
                if "log_end" in report:
                    kept_logs.keep(job.id, rank.rank, job.attempt, report["log_end"], report["log_from"],
                                   report["log_to"])
                if rank.state in states.FINISHED_STATES and report.get("processes"):
                    leftovers[job.id].add(rank.host)
        _settle(job, verbose)
        notify.observe(job, before, tails)  # saved with the new state: recorded once
    # One transaction: one disk sync for every job refreshed.
    for job in store.save_if_unchanged(*jobs):
        if job.pending:  # kept from this read, merged: the state and message say so
            job.move_to(aggregate(job))
            job.message = describe(job)
            store.save_if_unchanged(job)
    return leftovers


def _apply(rank, report: dict, attempt: int, in_flight: bool) -> None:
    """One rank's report from its node. A final state of the current attempt is
    kept (a later read cannot know more), and a rank whose launch is still in
    flight is not judged by files it has not yet received."""
    if rank.attempt == attempt and rank.state in states.FINISHED_STATES:
        return
    state = report.get("state", states.LOST)
    if in_flight and (report.get("missing") or state == states.STARTING):
        return
    rank.move_to(state)
    rank.exit_code = report.get("exit_code")
    rank.cause = report.get("cause")
    if rank.cause:  # the worker's code, not its launcher's (torchrun's 1)
        rank.cause["launcher_exit_code"] = rank.exit_code
        rank.exit_code = rank.cause["exit_code"]
    rank.pid = report.get("pid") or rank.pid
    rank.pid_start = report.get("pid_start") or rank.pid_start
    rank.started_at = report.get("started") or rank.started_at
    rank.ended_at = report.get("ended")
    rank.leftovers = report.get("leftovers")
    rank.log_idle = report.get("log_idle")
    rank.attempt = attempt


def _settle(job: Job, verbose: int = 0) -> None:
    """The job's state, message and end time from its ranks'."""
    job.move_to(aggregate(job))
    if job.state.is_terminal and job.ended_at is None:
        job.ended_at = max((r.ended_at for r in job.ranks if r.ended_at), default=time.time())
        if executors.get(job.executor).study_store:
            from ..optuna.study import release_store

            release_store(job, verbose=verbose)  # nodes may not share a filesystem
    job.message = describe(job)


def _parse(result: dict) -> dict:
    try:
        return json.loads(result.get("stdout", "") or "{}")
    except ValueError:
        return {}


def aggregate(job: Job) -> str:
    """The job's state from its ranks': failed as soon as any rank failed."""
    ranks = [rank.state for rank in job.ranks]
    if states.FAILED in ranks or states.LOST in ranks or job.ended_by_tsubmit():
        return states.FAILED
    if (job.pending or {}).get("action") == "stop":
        return states.STOPPING
    if all(state == states.SUCCEEDED for state in ranks):
        return states.SUCCEEDED
    if states.RUNNING in ranks or states.STARTING in ranks:
        return states.RUNNING
    if states.UNREACHABLE in ranks:
        return states.UNREACHABLE
    return states.STOPPED


def describe(job: Job) -> str:
    parts = []
    rank = job.first_failure()
    if rank:
        parts.append(f"rank {rank.rank} on {rank.host} {rank.reason()}")
    if job.pending:
        hosts = ", ".join(job.pending["hosts"])
        parts.append(f"{job.pending['action']} pending on {hosts} (unreachable); the next "
                     f"`tsubmit stop`, `status` or `list` finishes it once the node answers")
    else:
        unreachable = [r.host for r in job.ranks if r.state == states.UNREACHABLE]
        if unreachable:
            parts.append(f"unreachable: {', '.join(unreachable)}")
    return "; ".join(parts)


def shown_state(job: Job, *, pending: bool = False) -> str:
    """The state as a user reads it: a failed job whose ranks still run says so,
    and with PENDING, what is pending where (a list shows no message)."""
    live = sum(rank.state in (states.RUNNING, states.STARTING) for rank in job.ranks)
    shown = job.state
    if job.state in states.FINISHED_STATES and live:
        shown = f"{job.state} ({live} rank{'s' if live > 1 else ''} still running)"
    if pending and job.pending:
        shown += f" ({job.pending['action']} pending on {', '.join(job.pending['hosts'])})"
    return shown


def shown_rank_state(rank: Rank) -> str:
    """A rank's state as a user reads it: with what its command left running, stopped when it ended."""
    if rank.leftovers:
        return f"{rank.state} ({rank.leftovers} left running, stopped)"
    return rank.state


# Seconds `list` leaves alone a host whose last try found it silent: it shows
# what is recorded there, pending, instead of waiting for it on every run.
SILENT_RETRY = 60.0


def recently_silent(store: JobStore) -> dict[str, float]:
    """{host: silent since} of the hosts whose last try, under SILENT_RETRY
    seconds ago, found them silent."""
    now = time.time()
    return {host: since for host, (since, tried) in store.silent_hosts().items()
            if now - tried < SILENT_RETRY}


def _finish_pending(store: JobStore, job: Job, skip_hosts: frozenset[str], *, verbose: int = 0) -> None:
    pending = job.pending
    hosts = [host for host in pending["hosts"] if host not in skip_hosts]
    if not hosts:
        return
    acted = _act(store, job, pending["action"], hosts, grace=pending["grace"], ranks=every_host(job),
                 attempt=pending.get("attempt"), verbose=verbose)
    still = sorted(set(acted.failures) | set(pending["hosts"]) - set(hosts))
    job.pending = {**pending, "hosts": still} if still else None
    if pending["action"] == "delete" and not job.pending:
        store.delete(job.id)
        postmortem.remove(job.id)
        kept_logs.remove(job.id)
        for rank in job.ranks:
            if rank.state in states.LIVE_RANK_STATES:
                rank.move_to(states.STOPPED)
        job.move_to(states.DELETED)
        job.message = (f"deleted: its cleanup, pending on {', '.join(pending['hosts'])}, "
                       "was finished once they answered")


def _stop_left_behind(store: JobStore, job: Job, skip_hosts: frozenset[str] = frozenset(), *,
                      verbose: int = 0) -> None:
    """Stop what an earlier attempt left on a node that did not answer when the
    attempt ended (a lost node, which the attempts after it do not use), once
    the node answers: each attempt's "unstopped" hosts (Job.attempts), as the
    rank each held then, until the stop is done there."""
    for record in job.attempts:
        hosts = [host for host in record.get("unstopped", ()) if host not in skip_hosts]
        if not hosts:
            continue
        acted = _act(store, job, "stop", hosts, grace=FAILURE_GRACE, attempt=record["attempt"], owed=False,
                     ranks={host: record["hosts"].index(host) for host in hosts}, verbose=verbose)
        done = set(hosts) - set(acted.failures)
        record["unstopped"] = [host for host in record["unstopped"] if host not in done]


def _act(store: JobStore, job: Job, action: str, hosts: list[str], **options) -> Acted:
    """node_actions.act, noting which hosts answered (recently_silent)."""
    acted = act(job, action, hosts, **options)
    store.note_contact(set(hosts) - set(acted.failures), set(acted.failures))
    return acted


def _should_stop_the_rest(job: Job, leftover_hosts: set[str]) -> bool:
    return (job.state == states.FAILED and not job.keep_going and not job.pending
            and not launcher_alive(job)
            and (bool(leftover_hosts)
                 or any(rank.state in (states.RUNNING, states.STARTING) for rank in job.ranks)))


def _stop_the_rest(store: JobStore, job: Job, leftover_hosts: set[str], *, verbose: int = 0) -> None:
    """A failed rank fails the job: stop its other ranks, as torchrun does within
    a node, and what ended ranks left behind; then read them, which keeps the
    ends of their logs (kept_logs)."""
    live = [rank for rank in job.ranks if rank.state in (states.RUNNING, states.STARTING)]
    hosts = sorted({rank.host for rank in live} | leftover_hosts)
    acted = _act(store, job, "stop", hosts, grace=FAILURE_GRACE, verbose=verbose)
    _read(store, [job], frozenset(acted.failures), verbose=verbose)
    if live:
        job.message += "; the other ranks were stopped (--keep-going keeps them running)"
    store.save_if_unchanged(job)


def stop(store: JobStore, job: Job, *, grace: int = 30, skip_hosts: frozenset[str] = frozenset(),
         verbose: int = 0) -> Acted:
    """Stop every rank on every node but SKIP_HOSTS, whatever the record says
    (idempotent). Nodes that could not be reached are in the result and stay pending."""
    hosts = [rank.host for rank in job.ranks if rank.host not in skip_hosts]
    acted = _act(store, job, "stop", hosts, grace=grace, verbose=verbose)
    _stop_left_behind(store, job, skip_hosts, verbose=verbose)
    _read(store, [job], skip_hosts, verbose=verbose)
    return acted


def delete(store: JobStore, job: Job, *, force: bool = False, verbose: int = 0) -> dict[str, str]:
    """Stop what runs, remove the job's directories on every node and its record.
    Returns the hosts where that could not be done; without FORCE the record
    is then kept, marked as pending that cleanup."""
    hosts = every_host(job)  # a lost node too: the job's folder stays there otherwise
    acted = _act(store, job, "delete", list(hosts), grace=10, ranks=hosts, verbose=verbose)
    if not acted.failures or force:
        store.delete(job.id)
        postmortem.remove(job.id)
        kept_logs.remove(job.id)
    else:
        now = time.time()
        for rank in job.ranks:  # gone from the nodes that answered: stopped, not lost
            if rank.host not in acted.failures and rank.state in states.LIVE_RANK_STATES:
                rank.move_to(states.STOPPED)
                rank.ended_at = now
        _settle(job, verbose)
        store.save(job)
    return acted.failures


SETUP_GC_TASK = "Remove the setup folders unused for a time"


def collect_garbage(store: JobStore, older_than: float, *, dry_run: bool = False,
                    setups_unused_for: float | None = None, verbose: int = 0) -> dict[str, list[str]]:
    """Remove finished jobs older than OLDER_THAN seconds: their directories on
    every node, their records, runner data dirs and archives no job needs.
    Jobs that still run are never touched. With SETUPS_UNUSED_FOR, also the
    setup folders (run --setup) no rank used for that long, on the nodes of
    every job recorded (collect_setups). Returns what was (or would be) removed,
    and delete_failures: {host: why} for the old jobs a node kept (they stay
    recorded, so the next gc tries again)."""
    import shutil

    from ..paths import state_dir

    cutoff = time.time() - older_than
    refresh(store, store.jobs(), verbose=verbose)
    # The nodes are taken before old jobs are forgotten: they are how gc finds them.
    known = store.jobs()
    old = [job for job in store.jobs() if not job.may_run()
           and (job.ended_at or job.created_at) < cutoff]
    removed: dict = {"jobs": [], "runs": [], "archives": [], "inventories": [], "kept": [],
                     "delete_failures": {}}
    for job in old:
        if not dry_run:
            failures = delete(store, job, verbose=verbose)
            if failures:
                removed["kept"].append(f"{job.id}: {'; '.join(f'{h}: {m}' for h, m in failures.items())}")
                for host, message in failures.items():
                    removed["delete_failures"][host] = f"job {job.id}: {message}"
                continue
        removed["jobs"].append(f"{job.id} ({job.name}, {job.state})")
    needed = {job.archive for job in store.jobs()} | {
        Path(source).stem for job in store.jobs() for source in job.inventory["sources"]}
    for folder, kind in ((state_dir() / "runs", "runs"), (state_dir() / "archives", "archives"),
                         (kept_inventories.folder(), "inventories")):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.stat().st_mtime >= cutoff or path.name.split(".")[0] in needed:
                continue
            removed[kind].append(path.name)
            if not dry_run:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    if setups_unused_for is not None:
        setups = collect_setups(known, setups_unused_for, dry_run=dry_run, verbose=verbose)
        removed.update(setups=setups["removed"], setups_in_use=setups["in_use"],
                       setup_failures=setups["failed"])
    return removed


def collect_setups(jobs: list[Job], unused_for: float, *, dry_run: bool = False,
                   verbose: int = 0) -> dict[str, list[str]]:
    """Remove the setup folders under the remote root of every node of JOBS that
    no rank used for UNUSED_FOR seconds, one playbook run for all of them; a
    folder a setup writes or a running rank uses stays (playbooks/files/
    remove_setups.sh). Returns "HOST: KEY" lists, removed and in_use, and
    failed: {host: why} for the nodes where it could not be done."""
    hosts = sorted({rank.host for job in jobs for rank in job.ranks})
    found: dict = {"removed": [], "in_use": [], "failed": {}}
    if not hosts:
        return found
    vault_files = {job.inventory.get("vault_password_file") for job in jobs} - {None}
    run = run_playbook("gc_setups", _sources(jobs), {host: {} for host in hosts},
                       {"gc_setup_age": int(unused_for), "gc_dry_run": dry_run}, verbose=verbose,
                       vault_password_file=min(vault_files, default=None))
    for host in hosts:
        outcome = run.hosts[host]
        if outcome.status != "ok":
            found["failed"][host] = outcome.message
            continue
        for line in str(outcome.results.get(SETUP_GC_TASK, {}).get("stdout") or "").splitlines():
            words = line.split()
            if line.startswith("removed ") and len(words) >= 2:
                found["removed"].append(f"{host}: {words[1]}")
            elif line.startswith("in use ") and len(words) >= 3:
                found["in_use"].append(f"{host}: {words[2]}")
    return found
