"""Rank logs: read with a playbook, or followed live.

Following is the one place tsubmit runs a remote command itself, because
Ansible cannot stream: one `tail -F --pid` per rank over ssh, built from the
inventory's own connection settings (host, port, user, key, common and extra
args, so a ProxyJump bastion works), sharing Ansible's control masters. On a
local connection the file is read directly.
"""

import shlex
import subprocess
import sys
import threading

from . import job as states
from .ansible_env import control_dir
from .errors import LaunchError
from .job import Job, Rank
from .node_actions import job_hosts, run_for_job
from .ssh_hints import host_key_hint

# ssh's own exit code when it could not connect or authenticate.
SSH_FAILED = 255

LOG_TASK = "Read the rank's log"


def fetch(job: Job, ranks: list[Rank], attempt: int, *, verbose: int = 0) -> dict[int, list[str]]:
    """Each rank's log lines, read on its node by a shell script (playbooks/logs.yml).

    A rank whose log cannot be read fails the command naming its host (exit 3),
    never an empty log."""
    never_started = [rank for rank in ranks if rank.pid is None]
    if attempt == job.attempt and never_started and job.state == states.FAILED:
        raise LaunchError(f"job {job.id} has no log: its launch failed, so it never ran"
                          f"{': ' + job.message if job.message else ''}. See why with "
                          f"`tsubmit status {job.id}`, check the nodes with `tsubmit cluster check`"
                          " (or -i INVENTORY), then `tsubmit restart` it")
    wanted = {rank.host for rank in ranks}
    hosts = {host: vars_ for host, vars_ in job_hosts(job).items() if host in wanted}
    run = run_for_job(job, "logs", {"tsubmit_job_attempt": attempt}, hosts=hosts, verbose=verbose)
    failures = run.failures()
    missing = {rank.host: "no result from the logs playbook" for rank in ranks
               if rank.host not in failures and LOG_TASK not in run.hosts[rank.host].results}
    if failures or missing:
        raise LaunchError("cannot read the logs of every rank", {**failures, **missing})
    return {rank.rank: str(run.hosts[rank.host].results[LOG_TASK].get("stdout") or "").splitlines()
            for rank in ranks}


def follow_command(host_vars: dict, log_path: str, pid: int | None, tail: int | None) -> list[str]:
    """The argv that streams one rank's log until its process ends."""
    tail_args = ["tail", "-n", str(tail) if tail is not None else "+1", "-F"]
    if pid:
        tail_args.append(f"--pid={pid}")
    remote = " ".join(shlex.quote(a) for a in tail_args) + " " + _remote_path(log_path)
    if host_vars.get("ansible_connection") == "local":
        return ["sh", "-c", remote]
    return [*ssh_command(host_vars, "-o", "ControlMaster=auto", "-o", "ControlPersist=600s",
                         "-o", f"ControlPath={control_dir()}/follow-%C"), remote]


def ssh_command(host_vars: dict, *options: str) -> list[str]:
    """ssh with OPTIONS and the inventory's connection settings for one host (port,
    user, key, common and extra args), ending with the host: append a remote command."""
    ssh = ["ssh", "-o", "BatchMode=yes", *options]
    if host_vars.get("ansible_port"):
        ssh += ["-p", str(host_vars["ansible_port"])]
    if host_vars.get("ansible_user"):
        ssh += ["-l", str(host_vars["ansible_user"])]
    if host_vars.get("ansible_ssh_private_key_file"):
        ssh += ["-i", str(host_vars["ansible_ssh_private_key_file"])]
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        ssh += shlex.split(str(host_vars.get(key) or ""))
    return [*ssh, "--", str(host_vars.get("ansible_host") or host_vars.get("inventory_hostname"))]


def _remote_path(path: str) -> str:
    # Leave a leading ~ to the remote shell so it means the remote user's home.
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def follow(streams: list[tuple[str, list[str]]], out=None) -> list[int]:
    """Run each (prefix, argv) and copy its lines to OUT with the prefix, until all end.

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
            with lock:
                out.write(prefix + line)
                out.flush()
        codes[index] = process.wait()
        reader.join()
        if codes[index] == SSH_FAILED and argv[0] == "ssh":
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
