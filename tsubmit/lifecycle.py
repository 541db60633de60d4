"""Job lifecycle: refresh states from the nodes, stop, restart, delete, wait.

Every remote step is a playbook run. Refreshing any number of jobs is one
run of status.yml over the union of their hosts, one task per host.
"""

import time
from collections import defaultdict

from . import hooks
from . import job as states
from .ansible_run import run_playbook
from .errors import LaunchError, UsageError
from .job import Job
from .store import JobStore

ACTIVE_STATES = frozenset({states.STARTING, states.RUNNING, states.UNREACHABLE})
STATUS_TASK = "Read the state of every rank on the node"


def _sources(jobs: list[Job]) -> list[str]:
    return list(dict.fromkeys(source for job in jobs for source in job.inventory["sources"]))


def job_hosts(job: Job, extra: dict | None = None) -> dict[str, dict]:
    return {rank.host: {"tsubmit_rank": rank.rank, **(extra or {})} for rank in job.ranks}


def run_for_job(job: Job, playbook: str, extravars: dict, *, hosts: dict | None = None, **options):
    """Run a playbook on the job's nodes with the job's inventory and vault password file."""
    return run_playbook(playbook, job.inventory["sources"], job_hosts(job) if hosts is None else hosts,
                        {"tsubmit_job_id": job.id, "tsubmit_job_executor": job.executor,
                         "tsubmit_job_container": job.extras.get("container"),
                         "tsubmit_job_optuna": job.extras.get("optuna"),
                         **hooks.job_extravars(job.extras), **extravars},
                        vault_password_file=job.inventory.get("vault_password_file"), **options)


def refresh(store: JobStore, jobs: list[Job], *, verbose: int = 0) -> list[Job]:
    """Read the current state of the active ones among JOBS from their nodes."""
    active = [job for job in jobs if job.state in ACTIVE_STATES]
    if not active:
        return jobs
    wanted: dict[str, list[dict]] = defaultdict(list)
    for job in active:
        for rank in job.ranks:
            wanted[rank.host].append({"key": f"{job.id}:{rank.rank}", "job": job.id,
                                      "rank": rank.rank, "attempt": job.attempt})
    vault_files = {job.inventory.get("vault_password_file") for job in active} - {None}
    run = run_playbook("status", _sources(active),
                       {host: {"status_ranks": ranks} for host, ranks in wanted.items()},
                       {}, verbose=verbose, vault_password_file=min(vault_files, default=None))
    for job in active:
        for rank in job.ranks:
            outcome = run.hosts[rank.host]
            if outcome.status != "ok":
                rank.state = states.UNREACHABLE
                continue
            report = _parse(outcome.results.get(STATUS_TASK, {})).get(f"{job.id}:{rank.rank}", {})
            rank.state = report.get("state", states.LOST)
            rank.exit_code = report.get("exit_code")
            rank.pid = report.get("pid") or rank.pid
            rank.started_at = report.get("started") or rank.started_at
            rank.ended_at = report.get("ended")
            rank.attempt = job.attempt
        job.state = aggregate(job)
        if job.state in states.FINISHED_STATES and job.ended_at is None:
            job.ended_at = max((r.ended_at for r in job.ranks if r.ended_at), default=time.time())
            if job.executor == "optuna":
                from .optuna import release_store

                release_store(job, verbose=verbose)  # nodes may not share a filesystem
        job.message = describe_failure(job)
    store.save(*active)  # one transaction: one disk sync for every job refreshed
    return jobs


def _parse(result: dict) -> dict:
    import json

    try:
        return json.loads(result.get("stdout", "") or "{}")
    except ValueError:
        return {}


def aggregate(job: Job) -> str:
    """The job's state from its ranks': failed as soon as any rank failed."""
    ranks = [rank.state for rank in job.ranks]
    if states.FAILED in ranks or states.LOST in ranks:
        return states.FAILED
    if all(state == states.SUCCEEDED for state in ranks):
        return states.SUCCEEDED
    if states.RUNNING in ranks or states.STARTING in ranks:
        return states.RUNNING
    if states.UNREACHABLE in ranks:
        return states.UNREACHABLE
    return states.STOPPED


def describe_failure(job: Job) -> str:
    for rank in job.ranks:
        if rank.state == states.FAILED:
            return f"rank {rank.rank} on {rank.host} exited with {rank.exit_code}"
        if rank.state == states.LOST:
            return f"rank {rank.rank} on {rank.host} ended without an exit code"
    unreachable = [r.host for r in job.ranks if r.state == states.UNREACHABLE]
    return f"unreachable: {', '.join(unreachable)}" if unreachable else ""


def stop(store: JobStore, job: Job, *, grace: int = 30, verbose: int = 0) -> dict[str, str]:
    """Stop every rank; returns the hosts that could not be reached (others still stop)."""
    run = run_for_job(job, "stop", {"stop_grace": grace}, verbose=verbose)
    failures = run.failures()
    refresh(store, [job], verbose=verbose)
    if job.state not in (states.FAILED, states.SUCCEEDED):
        job.state = states.STOPPED
        job.ended_at = job.ended_at or time.time()
    store.save(job)
    return failures


def restart(store: JobStore, job: Job, *, on_event=None, verbose: int = 0) -> Job:
    """Launch the same archive and options again as the next attempt."""
    from . import submit
    from .archive import Archive
    from .paths import state_dir

    refresh(store, [job], verbose=verbose)
    running = [r for r in job.ranks if r.state in (states.RUNNING, states.STARTING, states.UNREACHABLE)]
    if running:
        rank = running[0]
        raise UsageError(f"job {job.id} still runs (rank {rank.rank} on {rank.host} is {rank.state}); "
                         f"stop it first: tsubmit stop {job.id}")
    archive_path = state_dir() / "archives" / f"{job.archive}.tar.gz"
    if not archive_path.exists():
        raise UsageError(f"the archive of job {job.id} is gone from {archive_path}; submit it again")
    job.attempt += 1
    job.state, job.message, job.ended_at = states.STARTING, "", None
    for rank in job.ranks:
        rank.state, rank.exit_code, rank.pid, rank.ended_at = states.STARTING, None, None, None
        rank.attempt = job.attempt
    store.save(job)
    archive = Archive(archive_path, job.archive, 0, archive_path.stat().st_size)
    hosts = job_hosts(job)
    for rank in job.ranks:
        hosts[rank.host].update(tsubmit_node_address=rank.address, tsubmit_nproc=rank.nproc or 0)
    # Hook steps are left to their `when`: the inventory's hooks are not read here.
    run = run_for_job(job, "submit", submit.extravars(job, archive), hosts=hosts,
                      on_event=on_event, verbose=verbose,
                      skip_tags=[] if job.executor == "optuna" else ["optuna"])
    failures = run.failures()
    if run.status == "successful" and not failures:
        failures = submit.unstarted(job, run)
    if failures or run.status != "successful":
        run_for_job(job, "stop", {"stop_grace": submit.ROLLBACK_GRACE}, verbose=verbose)
        job.state = states.FAILED
        job.message = "; ".join(f"{h}: {m}" for h, m in failures.items()) or "restart failed"
        store.save(job)
        raise LaunchError(f"restart of job {job.id} failed; nothing was left running", failures)
    submit.record_started(job, run)
    store.save(job)
    return job


def delete(store: JobStore, job: Job, *, verbose: int = 0) -> dict[str, str]:
    """Stop what runs, remove the job's directories on every node and its record."""
    run = run_for_job(job, "cleanup", {"stop_grace": 10}, verbose=verbose)
    failures = run.failures()
    if not failures:
        store.delete(job.id)
    return failures


def wait(store: JobStore, job: Job, *, timeout: float | None = None, interval: float = 2.0,
         verbose: int = 0) -> bool:
    """Block until the job ends; False when the timeout came first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        refresh(store, [job], verbose=verbose)
        if job.state in states.FINISHED_STATES:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))


def collect_garbage(store: JobStore, older_than: float, *, dry_run: bool = False,
                    verbose: int = 0) -> dict[str, list[str]]:
    """Remove finished jobs older than OLDER_THAN seconds: their directories on
    every node, their records, runner data dirs and archives no job needs.
    Jobs that still run are never touched. Returns what was (or would be) removed."""
    import shutil

    from .paths import state_dir

    cutoff = time.time() - older_than
    refresh(store, store.jobs(where="state IN (?, ?, ?)", params=tuple(ACTIVE_STATES)), verbose=verbose)
    old = [job for job in store.jobs() if job.state in states.FINISHED_STATES
           and (job.ended_at or job.created_at) < cutoff]
    removed: dict[str, list[str]] = {"jobs": [], "runs": [], "archives": [], "kept": []}
    for job in old:
        if not dry_run:
            failures = delete(store, job, verbose=verbose)
            if failures:
                removed["kept"].append(f"{job.id}: {'; '.join(f'{h}: {m}' for h, m in failures.items())}")
                continue
        removed["jobs"].append(f"{job.id} ({job.name}, {job.state})")
    needed = {job.archive for job in store.jobs()}
    for folder, kind in ((state_dir() / "runs", "runs"), (state_dir() / "archives", "archives")):
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.stat().st_mtime >= cutoff or path.name.split(".")[0] in needed:
                continue
            removed[kind].append(path.name)
            if not dry_run:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed
