"""`tsubmit watch`: the controller's watcher of jobs nobody waits for.

A pass refreshes every job that may still run and asks to be watched (it
notifies: issue 29; it has a restart policy or a hang timeout: issue 28), all
of them in one status run over the union of their nodes (lifecycle.refresh),
then acts on each (recovery.act): an attempt that failed is ended and the
next one launched, so the jobs are looked after without anyone running
`status`. One watcher at a time acts on a job: a pass takes each job's lock
without waiting (recovery.job_lock), leaves a job locked by another watcher
(or a `run --wait`) to it, and reads the jobs it holds from the store only
once it holds them, so what another watcher has just done is not done again.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import TsubmitError
from ..local.store import JobStore
from ..model.job import Job
from ..paths import state_dir
from . import attempts, lifecycle, recovery


@dataclass
class Pass:
    """What one pass did: the jobs it refreshed, those another watcher held,
    each refreshed job's state before and after, the jobs it restarted (the
    next attempt, and why the one before ended) and those it could not act on."""

    refreshed: list[Job] = field(default_factory=list)
    held_elsewhere: list[str] = field(default_factory=list)
    changed: list[tuple[Job, str]] = field(default_factory=list)  # (job, its state before)
    restarted: list[tuple[Job, str]] = field(default_factory=list)  # (next attempt, cause)
    failed: list[tuple[Job, TsubmitError]] = field(default_factory=list)  # (job, why this pass could not act)


def one_pass(store: JobStore, *, verbose: int = 0) -> Pass:
    done = Pass()
    ids = [job.id for job in store.jobs() if attempts.refreshed_by_watch(job)]
    with _locked(ids) as mine:
        done.held_elsewhere = [job_id for job_id in ids if job_id not in mine]
        jobs = [job for job in store.jobs() if job.id in mine and attempts.refreshed_by_watch(job)]
        before = {job.id: job.state for job in jobs}
        if jobs:
            done.refreshed = lifecycle.refresh(store, jobs, verbose=verbose)
        for job in done.refreshed:
            try:
                now = recovery.act(store, job, verbose=verbose)
            except TsubmitError as error:  # the others are still acted on; the next pass tries again
                done.failed.append((job, error))
                continue
            if now.attempt != job.attempt:
                done.restarted.append((now, now.restart_cause()))
            elif job.state != before[job.id]:
                done.changed.append((job, before[job.id]))
            # its last pass: the folder keeps a lock per job still watched
            if not attempts.refreshed_by_watch(now):
                (state_dir() / "watch" / f"{job.id}.lock").unlink(missing_ok=True)
    return done


@contextlib.contextmanager
def _locked(job_ids: list[str]) -> Iterator[set[str]]:
    """The ids among JOB_IDS whose lock this process got without waiting, held
    until the block ends (a killed watcher's locks go with its process)."""
    with contextlib.ExitStack() as stack:
        yield {job_id for job_id in job_ids if stack.enter_context(recovery.job_lock(job_id))}
