"""Rank logs: read with a playbook, or followed live.

Following is a place where tsubmit runs a remote command itself, because
Ansible cannot stream: one `tail -F --pid` per rank over ssh (tsubmit/nodes/ssh.py:
the inventory's connection settings, bastions included, and Ansible's
control masters). On a local connection the file is read directly.
"""

import sys
import threading
import time
from dataclasses import dataclass

from ..errors import LaunchError
from ..local import kept_logs
from ..model import job as states
from ..model import layout
from ..model.job import Job, Rank
from ..nodes import ssh
from ..nodes.actions import job_hosts, run_for_job
from ..nodes.places import Place, places
from ..nodes.ssh_session import Session

LOG_TASK = "Read the rank's log"
# Under torchrun each worker's lines start with its global rank (torch's
# TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE, set by roles/launch/templates/
# environment.sh.j2), so `logs --worker N` can pick one out of its node's log.
WORKER_PREFIX = "[worker {}] "


def worker_lines(worker: int):
    """A line filter for `--worker N`: its line without the prefix, None for the others'."""
    prefix = WORKER_PREFIX.format(worker)

    def select(line: str) -> str | None:
        return line[len(prefix):] if line.startswith(prefix) else None

    return select


def read(job: Job, ranks: list[Rank], attempt: int, *, log: str = layout.LOG, tail: int | None = None,
          verbose: int = 0, copies: dict[int, float] | None = None) -> dict[int, list[str]]:
    """Each rank's log lines, read on its node by a shell script (playbooks/logs.yml):
    LOG is the file of the attempt's folder, its output or the setup's (layout.SETUP_LOG);
    with TAIL, only its last TAIL lines travel.

    A rank whose node does not answer: with COPIES (a dict), its output's copy
    kept on the controller when it ended (tsubmit/local/kept_logs.py) if there is
    one, and COPIES[rank] says when it was kept. Otherwise a rank whose log
    cannot be read fails the command naming its host (exit 3), never an empty log."""
    never_started = [rank for rank in ranks if rank.pid is None]
    if attempt == job.attempt and never_started and job.state == states.FAILED:
        raise LaunchError(f"job {job.id} has no log: its launch failed, so it never ran"
                          f"{': ' + job.message if job.message else ''}. See why with "
                          f"`tsubmit status {job.id}`, check the nodes with `tsubmit cluster check`"
                          " (or -i INVENTORY), then `tsubmit restart` it")
    files = {rank.host: layout.attempt_file(job.id, rank.rank, attempt, log) for rank in ranks}
    wanted = {} if tail is None else {"tsubmit_log_tail": tail}
    hosts = {host: {**vars_, "tsubmit_log_path": files[host], **wanted}
             for host, vars_ in job_hosts(job).items() if host in files}
    run = run_for_job(job, "logs", {}, hosts=hosts, verbose=verbose)
    failures = run.failures()
    missing = {rank.host: "no result from the logs playbook" for rank in ranks
               if rank.host not in failures and LOG_TASK not in run.hosts[rank.host].results}
    # only a node that does not answer is read from its kept copy: one that answers
    # without the log (removed, unreadable) is named, as before copies were kept
    silent = {host for host, result in run.hosts.items() if result.status == "unreachable"}
    kept = {rank.rank: kept_logs.read(job.id, rank.rank, attempt) for rank in ranks
            if rank.host in silent and copies is not None and log == layout.LOG}
    if missing or not all(kept.get(rank.rank) for rank in ranks if rank.host in failures):
        raise LaunchError("cannot read the logs of every rank", {**failures, **missing})
    for number, (_, kept_at) in kept.items():
        copies[number] = kept_at
    return {rank.rank: kept[rank.rank][0] if rank.rank in kept
            else str(run.hosts[rank.host].results[LOG_TASK].get("stdout") or "").splitlines()
            for rank in ranks}


# Follows a log until the rank's process ends: PATH (absolute, or relative to
# the node user's home: layout.home_relative), the lines of it to start with
# ("+1": all, "+K": from line K), the pid ("": none).
_FOLLOW_SCRIPT = 'cd && exec tail -n "$2" -F ${3:+"--pid=$3"} "$1"'
# A node whose sshd does not answer is given this long (seconds) when the job
# names no node timeout (--node-timeout): the watcher's default.
NODE_TIMEOUT = 120.0
# Between two tries to reach a node that stopped answering.
RETRY_EVERY = 2.0


def node_timeout(job: Job) -> float:
    """How long a node of JOB may not answer before it counts as lost."""
    return float(job.extras.get("recovery", {}).get("node_timeout", NODE_TIMEOUT))


def follow_command(conn: ssh.Connection, log_path: str, pid: int | None, tail: int | None, *,
                   from_line: int | None = None, node_timeout: float = NODE_TIMEOUT) -> list[str]:
    """The argv that streams one rank's log until its process ends: its last TAIL
    lines first (all when None), or from line FROM_LINE on (a follow taken up
    again). A follow is long-lived: it gets a connection of its own, whose host
    key is checked now (a master Ansible opened earlier would hide a node's
    changed key), and which ends when the node has not answered for about a
    third of NODE_TIMEOUT (ssh's keepalives), so the follow can try again in time."""
    start = f"+{from_line}" if from_line is not None else str(tail) if tail is not None else "+1"
    alive_every = max(1, min(15, int(node_timeout / 9)))
    return ssh.command_argv(conn, _FOLLOW_SCRIPT, [layout.home_relative(log_path), start, str(pid or "")],
                            tty=False, shared=False,
                            options=("-o", f"ServerAliveInterval={alive_every}",
                                     "-o", "ServerAliveCountMax=3"))


@dataclass
class Followed:
    """One rank's log to follow: where, which file, and how its lines are shown."""

    place: Place
    path: str
    prefix: str = ""


def stream(job: Job, ranks: list[Rank], prefixed: bool, tail: int | None, select=None) -> None:
    """Follow RANKS' logs of the current attempt until their processes end; with
    SELECT (worker_lines), only the lines it keeps, as it returns them."""
    followed = [Followed(place, layout.attempt_file(job.id, place.rank.rank, job.attempt, layout.LOG,
                                                    root=place.root),
                         f"[rank {place.rank.rank} {place.rank.host}] " if prefixed else "")
                for place in places(job, ranks)]
    follow(followed, tail=tail, select=select, node_timeout=node_timeout(job))


def follow(followed: list[Followed], *, tail: int | None = None, out=None, select=None,
           node_timeout: float = NODE_TIMEOUT) -> list[int]:
    """Copy each log's lines to OUT with its prefix (with SELECT, only the lines it
    keeps, as it returns them) until every rank's process ended: each stream's
    exit code.

    A node that refuses the connection (a changed host key, a key it does not
    accept) fails the command at once, naming the host. A node that stops
    answering (its sshd gone, the link down) is tried again, the follow taken up
    where it stopped, until it has not answered for NODE_TIMEOUT seconds: then
    every stream ends and the command fails naming the host (exit 3), never an
    endless wait."""
    out = out or sys.stdout
    lock = threading.Lock()
    ended = threading.Event()
    sessions: dict[int, Session] = {}
    codes: list[int] = [0] * len(followed)
    failures: dict[str, str] = {}

    def give_up(index: int, host: str, message: str, line: str) -> None:
        with lock:
            failures[host] = message
            sys.stderr.write(f"{followed[index].prefix}{line}\n")
            sys.stderr.flush()
        ended.set()
        for session in list(sessions.values()):
            session.end()

    def pump(index: int) -> None:
        item = followed[index]
        place, shown, silent_since = item.place, 0, None
        while not ended.is_set():
            # Taken up again from the last line shown, which is skipped: a line
            # always comes back from a node that answers again. (After --tail N
            # the lines' numbers are unknown: the follow goes on with new lines.)
            again = silent_since is not None
            from_line = (max(shown, 1) if tail is None else None) if again else None
            skip = again and tail is None and shown > 0
            argv = follow_command(place.conn, item.path, place.rank.pid, 0 if again else tail,
                                  from_line=from_line, node_timeout=node_timeout)
            session = sessions[index] = Session(place.conn, argv, place.where, text=True)
            for line in session.stdout:
                if silent_since is not None:
                    silent_since = None
                    with lock:
                        sys.stderr.write(f"{item.prefix}tsubmit: {place.rank.host} answers again; "
                                         "following its log on\n")
                        sys.stderr.flush()
                if skip:
                    skip = False
                    continue
                shown += 1
                if select is not None and (line := select(line)) is None:
                    continue
                with lock:
                    out.write(item.prefix + line)
                    out.flush()
            codes[index] = session.wait()
            if not session.unreachable or ended.is_set():
                return
            if session.refused:
                give_up(index, place.rank.host, session.reason(),
                        f"cannot follow the log on {place.conn.address}: {session.reason()}")
                return
            now = time.monotonic()
            if silent_since is None:
                silent_since = now
                with lock:
                    sys.stderr.write(f"{item.prefix}tsubmit: no answer from {place.rank.host} "
                                     f"({session.reason()}); trying again for up to {node_timeout:g} s\n")
                    sys.stderr.flush()
            elif now - silent_since >= node_timeout:
                give_up(index, place.rank.host, f"no answer for {node_timeout:g} s: {session.reason()}",
                        f"tsubmit: gave up following the log on {place.rank.host}: no answer for "
                        f"{node_timeout:g} s (the job's node timeout)")
                return
            ended.wait(RETRY_EVERY)

    threads = [threading.Thread(target=pump, args=(index,), daemon=True) for index in range(len(followed))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        ended.set()
        for session in list(sessions.values()):
            session.end()
        raise
    if failures:
        raise LaunchError("cannot follow the logs of every rank; check the nodes with "
                          "`tsubmit cluster check`", failures)
    return codes
