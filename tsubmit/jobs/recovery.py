"""The recovery engine: what becomes of a job whose current attempt must end.

A job may carry a restart policy, `--restarts N` (job.extras["recovery"]).
Whoever watches the job (`tsubmit watch`, `run --wait`) calls `handle_end`
when its attempt must end: a rank failed, a node was lost, a rank hung. It
stops every rank of the attempt on every node that answers, fenced there (a
stopped attempt never starts on that node again: roles/stop/files/stop.sh),
records the attempt in job.attempts with why it ended, and, while restarts
remain, launches the next attempt through `run.relaunch`, the one launch
path; after N restarts the job fails with each attempt's cause recorded.

A node silent for longer than the job's --node-timeout is lost
(recovery_plan.lost_hosts): its ranks end with it, and the next attempt runs
without it, a spare taking its rank or the job going on with fewer nodes
(recovery_plan.next_plan). What the attempt still runs on a lost node is
recorded ("unstopped") and stopped by the first refresh it answers
(lifecycle), so it never runs beside the attempts after it.

Every step is checked against the nodes and may be done again, so a watcher
killed midway leaves nothing the next pass does not finish: an attempt
recorded but not relaunched is relaunched; a launch whose launcher died
midway is stopped and fenced everywhere and launched again as the next
attempt, without counting as a restart. One process acts on a job at a time
(`job_lock`), and reads the job from the store once it holds the lock.
"""

import contextlib
import fcntl
import time
from collections.abc import Iterator

from ..errors import TsubmitError
from ..interrupts import Interrupted
from ..local import kept_logs
from ..local.store import JobStore
from ..model import states
from ..model.job import Job
from ..nodes.actions import FAILURE_GRACE
from ..paths import ensure_private_dir, state_dir
from . import attempts, hangs, lifecycle, notify, plan, recovery_plan, run

# Tries at launching the next attempt before the job fails (a node's full disk, its archive gone).
LAUNCH_TRIES = 3


def must_act(job: Job) -> bool:
    """Whether a watcher has something to do with JOB, just refreshed: an
    ended attempt to restart, a hung rank, or a lost node."""
    return attempts.awaits_restart(job) or bool(hangs.hung_ranks(job)) or bool(recovery_plan.lost_hosts(job))


def handle_end(store: JobStore, job: Job, cause: str, *, lost_hosts=(), verbose: int = 0) -> Job:
    """End JOB's current attempt for CAUSE: stop every rank of it on every node
    but LOST_HOSTS (fenced: it never starts there again), record it, and launch
    the next attempt if the policy allows (on the same nodes, or, with
    LOST_HOSTS, as recovery_plan.next_plan says), else fail the job with CAUSE.
    Returns the job as it now is: its next attempt, or the ended one. A node
    that could not be stopped keeps the stop pending and nothing is launched:
    the next refresh finishes the stop, the next pass acts again."""
    failed_before = job.state == states.FAILED  # its failure was notified, unless a restart awaited it
    restart = (attempts.RESUMED if attempts.launch_interrupted(job)
               else attempts.POLICY if attempts.restarts_used(job) < attempts.restarts(job) else None)
    # Recorded first: the attempt has failed from now on, whatever its ranks
    # say (a hung rank stopped is not a failed one: lifecycle.aggregate), and a
    # watcher killed from here on leaves it to the next pass.
    attempts.record(job, cause, restart)
    job.move_to(lifecycle.aggregate(job))
    store.save(job)
    skip = frozenset(lost_hosts)
    if any(rank.host not in skip for rank in job.ranks):
        acted = lifecycle.stop(store, job, grace=FAILURE_GRACE, skip_hosts=skip, verbose=verbose)
        if acted.failures:
            return job
    _lose(job, skip)
    record = attempts.record(job, cause, restart)  # with the ends the nodes gave
    if skip:  # the lost nodes: what the attempt still runs there is stopped once they answer
        if not record.get("lost_hosts"):  # told once, not again when the relaunch is tried again
            notify.record(job, "lost_node", hosts=sorted(skip))
        record["lost_hosts"] = sorted(skip)
        record.setdefault("unstopped", sorted(skip & set(record["hosts"])))
    if restart is None:
        allowed = attempts.restarts(job)
        message = f"{cause}; no restart left (--restarts {allowed})" if allowed else cause
        _fail(store, job, message, notified=failed_before and not allowed)
        return job
    store.save(job)
    try:
        attempt = _relaunch(store, job, lost_hosts, verbose=verbose)
    except Interrupted:
        raise  # rolled back; not a try that failed
    except recovery_plan.NotEnoughNodes as error:  # no node to launch on: no try would do better
        record["restart"] = None
        _fail(store, job, str(error))
        return job
    except TsubmitError as error:
        record["launch_failures"] = record.get("launch_failures", 0) + 1
        if record["launch_failures"] < LAUNCH_TRIES:
            store.save(job, patient=True)
        else:
            record["restart"] = None
            _fail(store, job, f"{cause}; attempt {job.attempt + 1} could not be launched ({LAUNCH_TRIES} "
                              f"tries): {error}")
        raise
    if notify.record(attempt, "restarted", cause=cause):
        store.save(attempt)
        notify.deliver(store, [attempt])
    return attempt


def act(store: JobStore, job: Job, *, verbose: int = 0) -> Job:
    """What a watcher does with a job it holds (job_lock) and has just
    refreshed: end an attempt that failed, hung (its evidence taken first:
    tsubmit/jobs/hangs.py) or lost a node, and launch the next one, as the
    policy says. Returns the job as it now is."""
    lost = recovery_plan.lost_hosts(job)
    if lost:
        return handle_end(store, job, f"lost node{'s' if len(lost) > 1 else ''} {', '.join(lost)}",
                          lost_hosts=lost, verbose=verbose)
    hung = hangs.hung_ranks(job)
    if hung:
        hangs.take_evidence(job, hung, verbose=verbose)
        return handle_end(store, job, hangs.cause(hung), verbose=verbose)
    cause = attempts.failure(job) if attempts.restarts(job) else None
    if cause is None:
        return job
    # An attempt whose next one could not be launched yet: again without the nodes it lost.
    record = next((r for r in job.attempts if r["attempt"] == job.attempt and r.get("lost_hosts")), None)
    if record:
        return handle_end(store, job, record["cause"], lost_hosts=record["lost_hosts"], verbose=verbose)
    return handle_end(store, job, cause, verbose=verbose)


def _lose(job: Job, hosts: frozenset[str]) -> None:
    """The ranks on HOSTS end with their lost nodes (no exit code), and the attempt with them."""
    now = time.time()
    for rank in job.ranks:
        if rank.host in hosts and rank.state in states.LIVE_RANK_STATES:
            rank.move_to(states.LOST)
            rank.ended_at = now
    if hosts and not job.state.is_terminal:
        job.move_to(lifecycle.aggregate(job))


def _fail(store: JobStore, job: Job, message: str, *, notified: bool = False) -> None:
    """JOB has failed for good, for MESSAGE; its failure is notified unless it was (NOTIFIED)."""
    job.ended_at = job.ended_at or time.time()
    job.message = message
    if not notified:
        notify.record(job, states.FAILED, _tails(job))
    store.save(job, patient=True)
    notify.deliver(store, [job])


def _tails(job: Job) -> dict[int, list[str]]:
    """The end of the first failed rank's log for the message: as the refresh
    that saw it fail read it (notify.held_tails), else from the copy kept when it ended."""
    held = notify.held_tails(job)
    if held:
        return held
    rank = job.first_failure()
    kept = kept_logs.read(job.id, rank.rank, job.attempt) if rank else None
    return {rank.rank: kept[0][-notify.TAIL_LINES:]} if kept else {}


def _relaunch(store: JobStore, job: Job, lost_hosts, *, verbose: int = 0) -> Job:
    """The next attempt: on the same nodes, or without LOST_HOSTS (a spare takes
    a lost node's rank, or the job goes on with fewer nodes)."""
    the_plan = (recovery_plan.next_plan(job, lost_hosts, store=store) if lost_hosts
                else plan.replan(job))
    return run.relaunch(store, the_plan, verbose=verbose)


@contextlib.contextmanager
def job_lock(job_id: str, *, wait: bool = False) -> Iterator[bool]:
    """Whether this process holds JOB_ID's lock (without WAIT, it does not
    wait for another holder), held until the block ends; a killed holder's
    lock goes with its process."""
    path = ensure_private_dir(state_dir() / "watch") / f"{job_id}.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
