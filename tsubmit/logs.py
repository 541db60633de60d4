"""Rank logs: fetched with a playbook, or followed live.

Following is the one place tsubmit runs a remote command itself, because
Ansible cannot stream: one `tail -F --pid` per rank over ssh, built from the
inventory's own connection settings (host, port, user, key, common and extra
args, so a ProxyJump bastion works), sharing Ansible's control masters. On a
local connection the file is read directly.
"""

import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .ansible_env import control_dir
from .errors import LaunchError
from .job import Job, Rank
from .lifecycle import job_hosts, run_for_job


def fetch(job: Job, ranks: list[Rank], attempt: int, *, verbose: int = 0) -> dict[int, list[str]]:
    """Each rank's log lines, copied back with ansible.builtin.fetch."""
    wanted = {rank.host for rank in ranks}
    with tempfile.TemporaryDirectory(prefix="tsubmit-logs-") as dest:
        hosts = {host: vars_ for host, vars_ in job_hosts(job).items() if host in wanted}
        run = run_for_job(job, "logs", {"tsubmit_job_attempt": attempt, "tsubmit_logs_dest": dest},
                          hosts=hosts, verbose=verbose)
        failures = run.failures()
        if failures:
            raise LaunchError("cannot read the logs of every rank", failures)
        logs = {}
        for rank in ranks:
            path = Path(dest) / f"rank-{rank.rank}.log"
            logs[rank.rank] = path.read_text(errors="replace").splitlines() if path.exists() else []
        return logs


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
    """Run each (prefix, argv) and copy its lines to OUT with the prefix, until all end."""
    out = out or sys.stdout
    lock = threading.Lock()
    codes: list[int] = [0] * len(streams)

    def pump(index: int, prefix: str, argv: list[str]) -> None:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL, text=True, errors="replace")
        assert process.stdout is not None
        for line in process.stdout:
            with lock:
                out.write(prefix + line)
                out.flush()
        codes[index] = process.wait()

    threads = [threading.Thread(target=pump, args=(i, prefix, argv), daemon=True)
               for i, (prefix, argv) in enumerate(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes
