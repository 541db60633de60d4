"""Rank logs: read with a playbook, or followed live.

Following is a place where tsubmit runs a remote command itself, because
Ansible cannot stream: one `tail -F --pid` per rank over ssh (tsubmit/ssh.py:
the inventory's connection settings, bastions included, and Ansible's
control masters). On a local connection the file is read directly.
"""

import subprocess
import sys
import threading

from . import job as states
from . import kept_logs, layout, ssh
from .errors import LaunchError
from .job import Job, Rank
from .node_actions import job_hosts, run_for_job
from .ssh_hints import host_key_hint

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


def fetch(job: Job, ranks: list[Rank], attempt: int, *, log: str = layout.LOG,
          verbose: int = 0, copies: dict[int, float] | None = None) -> dict[int, list[str]]:
    """Each rank's log lines, read on its node by a shell script (playbooks/logs.yml):
    LOG is the file of the attempt's folder, its output or the setup's (layout.SETUP_LOG).

    A rank whose node does not answer: with COPIES (a dict), its output's copy
    kept on the controller when it ended (tsubmit/kept_logs.py) if there is
    one, and COPIES[rank] says when it was kept. Otherwise a rank whose log
    cannot be read fails the command naming its host (exit 3), never an empty log."""
    never_started = [rank for rank in ranks if rank.pid is None]
    if attempt == job.attempt and never_started and job.state == states.FAILED:
        raise LaunchError(f"job {job.id} has no log: its launch failed, so it never ran"
                          f"{': ' + job.message if job.message else ''}. See why with "
                          f"`tsubmit status {job.id}`, check the nodes with `tsubmit cluster check`"
                          " (or -i INVENTORY), then `tsubmit restart` it")
    files = {rank.host: layout.attempt_file(job.id, rank.rank, attempt, log) for rank in ranks}
    hosts = {host: {**vars_, "tsubmit_log_path": files[host]}
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


# Follows a log until the rank's process ends: PATH (a leading ~ is the node
# user's home), the lines of it to start with ("+1": all), the pid ("": none).
_FOLLOW_SCRIPT = '''path=$1
case $path in "~/"*) path=$HOME/${path#"~/"} ;; esac
exec tail -n "$2" -F ${3:+"--pid=$3"} "$path"'''


def follow_command(conn: ssh.Connection, log_path: str, pid: int | None, tail: int | None) -> list[str]:
    """The argv that streams one rank's log until its process ends. A follow is
    long-lived: it gets a connection of its own, whose host key is checked now
    (a master Ansible opened earlier would hide a node's changed key)."""
    return ssh.command_argv(conn, _FOLLOW_SCRIPT,
                            [log_path, str(tail) if tail is not None else "+1", str(pid or "")],
                            tty=False, shared=False)


def stream(job: Job, ranks: list[Rank], prefixed: bool, tail: int | None, select=None) -> None:
    """Follow RANKS' logs of the current attempt until their processes end; with
    SELECT (worker_lines), only the lines it keeps, as it returns them."""
    from .remote_access import places

    streams = []
    for place in places(job, ranks):
        rank = place.rank
        path = layout.attempt_file(job.id, rank.rank, job.attempt, layout.LOG, root=place.root)
        prefix = f"[rank {rank.rank} {rank.host}] " if prefixed else ""
        streams.append((prefix, follow_command(place.conn, path, rank.pid, tail)))
    follow(streams, select=select)


def follow(streams: list[tuple[str, list[str]]], out=None, select=None) -> list[int]:
    """Run each (prefix, argv) and copy its lines to OUT with the prefix, until all end;
    with SELECT, only the lines it keeps, as it returns them.

    An ssh that could not connect (exit 255: a changed host key, a node down)
    is reported on stderr at once, naming the host, and fails the command
    (LaunchError) once the other streams end: never a silent, endless wait."""
    out = out or sys.stdout
    lock = threading.Lock()
    codes: list[int] = [0] * len(streams)
    failures: dict[str, str] = {}

    def pump(index: int, prefix: str, argv: list[str]) -> None:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, text=True, errors="replace")
        assert process.stdout is not None and process.stderr is not None
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
        reader.start()
        for line in process.stdout:
            if select is not None and (line := select(line)) is None:
                continue
            with lock:
                out.write(prefix + line)
                out.flush()
        codes[index] = process.wait()
        reader.join()
        if codes[index] == ssh.SSH_FAILED and "--" in argv:
            host = argv[argv.index("--") + 1] if "--" in argv else "?"
            text = "".join(errors)
            lines = [line.strip() for line in errors if line.strip() and not line.startswith("@")]
            message = host_key_hint(text, argv) or (lines[-1] if lines else "ssh failed")
            with lock:
                failures[host] = message
                sys.stderr.write(f"{prefix}cannot follow the log on {host}: {message}\n")
                sys.stderr.flush()

    threads = [threading.Thread(target=pump, args=(i, prefix, argv), daemon=True)
               for i, (prefix, argv) in enumerate(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise LaunchError("cannot follow the logs of every rank; check the nodes with "
                          "`tsubmit cluster check`", failures)
    return codes
