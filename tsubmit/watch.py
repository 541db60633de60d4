"""`tsubmit watch`: the controller's watcher of jobs nobody waits for.

A pass refreshes every job that may still run and asks to be watched (it
notifies: issue 29), all of them in one status run over the union of their
nodes (lifecycle.refresh), so their notifications go out without anyone
running `status`. One watcher at a time acts on a job: a pass takes each job's
lock without waiting, leaves a job locked by another watcher to it, and reads
the jobs it holds from the store only once it holds them, so a message another
watcher has just sent is not sent again.
"""

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import lifecycle
from .job import Job
from .paths import ensure_private_dir, state_dir
from .store import JobStore


@dataclass
class Pass:
    """What one pass did: the jobs it refreshed, those another watcher held,
    and each refreshed job's state before and after."""

    refreshed: list[Job] = field(default_factory=list)
    held_elsewhere: list[str] = field(default_factory=list)
    changed: list[tuple[Job, str]] = field(default_factory=list)  # (job, its state before)


def watched(job: Job) -> bool:
    return job.may_run() and bool(job.extras.get("notify"))


def one_pass(store: JobStore, *, verbose: int = 0) -> Pass:
    done = Pass()
    ids = [job.id for job in store.jobs() if watched(job)]
    with _locked(ids) as mine:
        done.held_elsewhere = [job_id for job_id in ids if job_id not in mine]
        jobs = [job for job in store.jobs() if job.id in mine and watched(job)]
        before = {job.id: job.state for job in jobs}
        if jobs:
            done.refreshed = lifecycle.refresh(store, jobs, verbose=verbose)
        done.changed = [(job, before[job.id]) for job in done.refreshed if job.state != before[job.id]]
        for job in done.refreshed:
            if not watched(job):  # its last pass: the folder keeps a lock per job still watched
                (_folder() / f"{job.id}.lock").unlink(missing_ok=True)
    return done


def _folder():
    return ensure_private_dir(state_dir() / "watch")


@contextlib.contextmanager
def _locked(job_ids: list[str]) -> Iterator[set[str]]:
    """The ids among JOB_IDS whose lock this process got without waiting, held
    until the block ends (a killed watcher's locks go with its process)."""
    folder = _folder()
    with contextlib.ExitStack() as stack:
        mine = set()
        for job_id in job_ids:
            handle = stack.enter_context(open(folder / f"{job_id}.lock", "a"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            mine.add(job_id)
        yield mine
