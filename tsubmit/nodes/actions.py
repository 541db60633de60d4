"""Acting on a job's nodes: the playbook runs that stop, clean up or roll back
a job, and who is launching it.

What a run could not do on a node that did not answer is recorded in the job
(Job.pending), so a later command finishes it there (lifecycle.refresh).
"""

import os
import socket
from dataclasses import dataclass, field

from ..local.runner_dirs import process_identity
from ..model import executors
from ..model.job import Job
from . import hooks
from .ansible_run import run_playbook

STOP_TASK = "Stop every process of the rank"
# Seconds a rank gets to end after SIGTERM when tsubmit stops it on its own:
# its job failed elsewhere, or a launch is rolled back.
FAILURE_GRACE = 10
ROLLBACK_GRACE = 5
# Each pending action, and the playbook that carries it out.
# A delete is a cleanup after which the job is forgotten; a launch rolled back
# cleans up and keeps its record.
_ACTION_PLAYBOOKS = {"stop": "stop", "cleanup": "cleanup", "rollback": "stop", "delete": "cleanup"}


def job_hosts(job: Job, extra: dict | None = None) -> dict[str, dict]:
    return {rank.host: {"tsubmit_rank": rank.rank, **(extra or {})} for rank in job.ranks}


def every_host(job: Job) -> dict[str, int]:
    """Every host the job ran on, with the rank it held last: the current
    attempt's, then those only earlier attempts ran on (a lost node)."""
    held = {}
    for record in reversed(job.attempts):
        for rank, host in enumerate(record.get("hosts") or ()):
            held.setdefault(host, rank)
    return {**held, **{rank.host: rank.rank for rank in job.ranks}}


def run_for_job(job: Job, playbook: str, extravars: dict, *, hosts: dict | None = None, **options):
    """Run a playbook on the job's nodes with the job's inventory and vault password file."""
    return run_playbook(playbook, job.inventory["sources"], job_hosts(job) if hosts is None else hosts,
                        {"tsubmit_job_id": job.id, "tsubmit_job_executor": executors.get(job.executor).runs,
                         "tsubmit_job_container": job.extras.get("container"),
                         "tsubmit_job_optuna": job.extras.get("optuna"),
                         **hooks.job_extravars(job.extras), **extravars},
                        vault_password_file=job.inventory.get("vault_password_file"), **options)


def launcher_identity() -> dict:
    """This process, as the launcher of a job: its host and "PID STARTTICKS"."""
    return {"host": socket.gethostname(), "process": process_identity(os.getpid())}


def launcher_alive(job: Job) -> bool:
    launcher = job.launcher
    if not launcher:
        return False
    if launcher.get("host") != socket.gethostname():
        return True  # another controller's launch: it cannot be seen from here
    return process_identity(int(launcher["process"].split()[0])) == launcher["process"]


@dataclass
class Acted:
    """What a stop, cleanup or rollback did on the nodes."""

    failures: dict[str, str] = field(default_factory=dict)  # host -> why it could not
    stopped: bool = False  # something of the job was running and was stopped
    left: int = 0  # processes that carried a marker and survived


def act(job: Job, action: str, hosts: list[str], *, grace: int, attempt: int | None = None,
        ranks: dict[str, int] | None = None, owed: bool = True, verbose: int = 0) -> Acted:
    """Carry out ACTION on HOSTS, each as the rank RANKS gives it (default: its
    rank in the current attempt); a stop or rollback given ATTEMPT acts on that
    attempt only. With OWED, hosts that could not do it are recorded as
    pending (Job.pending)."""
    extravars: dict = {"stop_grace": grace}
    if action == "rollback":
        extravars.update(stop_attempt=attempt, stop_remove_attempt=True)
    elif action == "stop":
        # What is stopped stays stopped: no attempt up to the job's may start on
        # these nodes afterwards, not even from a launch whose launcher died midway
        # (the next attempt, job.attempt + 1, may: tsubmit restart, recovery).
        extravars.update(stop_fence=job.attempt + 1)
        if attempt:  # that attempt only (another node may hold the rank's number in a later one)
            extravars["stop_attempt"] = attempt
    wanted = set(hosts)
    as_ranks = (job_hosts(job) if ranks is None
                else {host: {"tsubmit_rank": rank} for host, rank in ranks.items()})
    run = run_for_job(job, _ACTION_PLAYBOOKS[action], extravars,
                      hosts={h: v for h, v in as_ranks.items() if h in wanted}, verbose=verbose)
    acted = Acted(failures=run.failures())
    for host in wanted - set(acted.failures):
        output = run.hosts[host].results.get(STOP_TASK, {}).get("stdout", "")
        acted.stopped |= bool(output.strip())
        acted.left += sum(int(line.split()[1]) for line in output.splitlines()
                          if line.startswith("left ") and line.split()[1].isdigit())
    if not owed:
        return acted
    if acted.failures:
        job.pending = {"action": action, "hosts": sorted(acted.failures), "grace": grace,
                       "attempt": attempt}
    else:
        job.pending = None
    return acted
