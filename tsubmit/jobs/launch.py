"""Launching a planned job: pack, record, launch on every node, roll back on
failure (`run`, `restart` and the next attempt all launch here).
"""

import json
import time
from dataclasses import dataclass

from ..errors import LaunchError, UsageError
from ..interrupts import Deferred, Interrupted
from ..local import archive as archives
from ..local import kept_inventories
from ..local.store import JobStore
from ..model import layout
from ..model.job import Job
from ..model.states import FAILED, RUNNING, STOPPED
from ..nodes import actions, gpu_leases
from ..nodes.ansible_run import FULL_DISK, PlaybookRun, cluster_hosts, run_playbook
from ..paths import ensure_private_dir, state_dir
from .plan import Plan, extravars

# The launch role's tasks that start a rank and print "PID STARTTICKS EPOCH":
# the first, unless pre-launch hooks make the start a task of its own.
START_TASKS = ("Ship the job's tree and launch script, and start the rank", "Start the rank detached")


def pack(the_plan: Plan, workdir) -> archives.Archive:
    try:
        archive = archives.pack(workdir, ensure_private_dir(state_dir() / "archives"))
    except OSError as error:
        raise UsageError(f"cannot archive {workdir}: {error}") from None
    the_plan.job.archive = archive.digest
    return archive


def check(the_plan: Plan, workdir, *, verbose: int = 1) -> dict[str, dict]:
    """The submit playbook in Ansible's check mode with diff: what would change
    where (shown by Ansible itself); nothing is started, nothing recorded.
    Returns each host's {command, environment} as the launch role rendered them."""
    the_plan.cluster.require_vault_password()
    run = _run_submit_playbook(the_plan, pack(the_plan, workdir), verbose=verbose, check=True)
    failures = run.failures()
    if failures or run.status != "successful":
        raise LaunchError("the check found problems", failures)
    return {host: json.loads(result.results.get(START_TASKS[0], {}).get("stdout") or "{}")
            for host, result in run.hosts.items()}


def submit(the_plan: Plan, workdir, store: JobStore, *, on_event=None, verbose: int = 0) -> Job:
    """Pack, record, launch on every node; roll back everything on a failure or an interrupt."""
    job = the_plan.job
    the_plan.cluster.require_vault_password()
    try:  # packing touches no node: an interrupt ends it at once, and nothing is cached
        archive = pack(the_plan, workdir)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while packing {workdir}; nothing was recorded or started") from None
    job.launcher = actions.launcher_identity()
    # The job keeps the connection details it was launched with, whatever becomes of its cluster.
    kept_inventories.launching_from(job.inventory, job.inventory["sources"])
    store.save(job)  # recorded before anything remote happens

    def roll_back(failures: dict[str, str] | None) -> str:
        was_interrupted = failures is None
        acted = actions.act(job, "cleanup", [rank.host for rank in job.ranks],
                              grace=actions.ROLLBACK_GRACE, verbose=verbose)
        job.move_to(STOPPED if was_interrupted else FAILED)
        job.ended_at, job.launcher = time.time(), None
        for rank in job.ranks:
            rank.move_to(FAILED if rank.host in (failures or {}) else STOPPED)
        store.save(job, patient=True)
        left = (f"; {', '.join(acted.failures)} could not be cleaned up and stay pending "
                f"(`tsubmit delete {job.id}` once they answer)" if acted.failures
                else "; nothing was left running")
        if was_interrupted:
            return f"interrupted: the launch of job {job.id} was rolled back{left}; recorded as stopped"
        return f"launch of job {job.id} failed{left}"

    launch(job, store, target(the_plan, archive), roll_back=roll_back, on_event=on_event,
           verbose=verbose)
    return job


@dataclass
class Target:
    """Where and with what submit.yml runs: the one launch path of run and restart."""

    sources: list[str]
    hosts: dict[str, dict]
    extravars: dict
    skip_tags: list[str]
    vault_password_file: str | None
    remote_roots: dict[str, str]  # per host, as the inventory gives it


def target(the_plan: Plan, archive: archives.Archive) -> Target:
    """What run and restart launch with: the same extra-vars, skipped steps and rendering."""
    cluster = the_plan.cluster
    return Target(cluster.ref.sources, cluster_hosts(cluster, the_plan.host_vars()),
                  {**extravars(the_plan.job, archive), **the_plan.role_validation()},
                  the_plan.skipped_steps(), cluster.ref.vault_password_file,
                  {node.name: layout.host_value(node.vars, "remote_root") for node in cluster.nodes})


def launch(job: Job, store: JobStore, target: Target, *, roll_back, on_event=None, verbose: int = 0) -> None:
    """Run submit.yml and record the started ranks. On a failure, or a signal,
    ROLL_BACK(failures by host, or None when interrupted) undoes the launch
    everywhere once the play has ended on every node, and returns the message
    to raise with."""
    with Deferred("rolling back once the launch has ended on every node") as interrupted:
        try:
            run = _submit_playbook(target, on_event=on_event, verbose=verbose, cancel=interrupted.forced)
        except Interrupted:  # a second signal: the play was cancelled
            run = None
        if interrupted or run is None:
            raise Interrupted(roll_back(None))
        failures = run.failures()
        if run.status == "successful" and not failures:
            failures = unstarted(job, run)
        if failures or run.status != "successful":
            failures = full_disks_named(failures, target.remote_roots) or {
                "ansible": f"the submit playbook {run.status}; see {run.data_dir}/artifacts"}
            busy = gpu_leases.busy_nodes(failures)
            one_machine = gpu_leases.one_machine(job, busy)
            message = roll_back(failures)
            job.message = "; ".join(f"{host}: {text}" for host, text in failures.items())
            if busy:
                job.message = one_machine or gpu_leases.busy_message(busy)
            store.save(job, patient=True)
            if one_machine:
                raise LaunchError(f"{message}: {one_machine}",
                                  {host: gpu_leases.node_busy(report) for host, report in busy.items()})
            if busy:
                raise gpu_leases.GpusBusy(message, busy)
            raise LaunchError(message, failures)
        record_started(job, run)
        job.launcher = None
        # The ranks run: their record is written however long another process holds the store,
        # and a signal meanwhile rolls them back once it is, as it said.
        store.save(job, patient=True)
        if interrupted:
            raise Interrupted(roll_back(None))


def full_disks_named(failures: dict[str, str], remote_roots: dict[str, str]) -> dict[str, str]:
    """FAILURES, with a node's full disk said as what it is and where, before the line that says it."""
    def named(host: str, message: str) -> str:
        found = FULL_DISK.search(message)
        if not found:
            return message
        what = "no space left" if found.group() == "No space left on device" else "disk quota exceeded"
        return f"{what} on {host} in {remote_roots.get(host, layout.DEFAULT_ROOT)} ({message})"

    return {host: named(host, message) for host, message in failures.items()}


def _run_submit_playbook(the_plan: Plan, archive: archives.Archive, **options) -> PlaybookRun:
    return _submit_playbook(target(the_plan, archive), **options)


def _submit_playbook(target: Target, **options) -> PlaybookRun:
    """submit.yml on the target's nodes, without the steps and checks it has no need of."""
    return run_playbook("submit", target.sources, target.hosts, target.extravars,
                        skip_tags=target.skip_tags, vault_password_file=target.vault_password_file,
                        **options)


def _printed_pid(run: PlaybookRun, host: str) -> str:
    results = run.hosts[host].results
    return next((results[task]["stdout"] for task in reversed(START_TASKS)
                 if results.get(task, {}).get("stdout", "").strip()), "")


def unstarted(job: Job, run: PlaybookRun) -> dict[str, str]:
    """Hosts whose launch printed no pid: a replaced launch role that does not keep the contract."""
    return {rank.host: f"the launch role printed no pid; the task that starts a rank must be named "
                       f"{' or '.join(map(repr, START_TASKS))} and print 'PID STARTTICKS EPOCH'"
            for rank in job.ranks if not _printed_pid(run, rank.host)}


def record_started(job: Job, run: PlaybookRun) -> None:
    """Take each rank's pid and start time from what its launch script printed."""
    for rank in job.ranks:
        pid, ticks, started = _printed_pid(run, rank.host).split()[:3]
        rank.pid, rank.pid_start, rank.started_at = int(pid), ticks, float(started)
        rank.move_to(RUNNING)
    job.move_to(RUNNING)
