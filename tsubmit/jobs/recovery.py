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
from ..nodes.actions import FAILURE_GRACE, launcher_alive
from ..paths import ensure_private_dir, state_dir
from . import hangs, lifecycle, notify, recovery_plan

# How the attempt after a recorded one came (Job.attempts' "restart").
POLICY = "policy"  # --restarts
RESUMED = "resumed"  # its launch was interrupted: launched again, not counted
USER = "user"  # tsubmit restart
# Tries at launching the next attempt before the job fails (a node's full disk, its archive gone).
LAUNCH_TRIES = 3


def policy(job: Job) -> dict:
    """The job's recovery settings: restarts, node_timeout, min_nodes, hang_timeout, sync_dirs."""
    return job.extras.get("recovery") or {}


def restarts(job: Job) -> int:
    return int(policy(job).get("restarts", 0))


def restarts_used(job: Job) -> int:
    """The restarts --restarts made since the job was submitted or last
    restarted by hand, this attempt's own record aside."""
    used = 0
    for record in job.attempts:
        if record["attempt"] != job.attempt:
            used = 0 if record.get("restart") == USER else used + (record.get("restart") == POLICY)
    return used


def watched(job: Job) -> bool:
    """Whether a watcher acts on JOB's attempts: it may restart them, or end a hung one."""
    return bool(restarts(job) or policy(job).get("hang_timeout"))


def launch_interrupted(job: Job) -> bool:
    """Whether the launch of JOB's attempt died midway: its launcher is gone and some rank never started."""
    return (job.launcher is not None and not launcher_alive(job)
            and any(rank.pid is None for rank in job.ranks))


def failure(job: Job) -> str | None:
    """Why JOB's current attempt must end, as its record says after a refresh,
    when nobody has acted on it yet (a rank failed, or its launch died midway);
    else None."""
    if job.state != states.FAILED or job.pending or launcher_alive(job) or _ended_for_good(job):
        return None
    if launch_interrupted(job):
        return f"the launch of attempt {job.attempt} was interrupted"
    rank = job.first_failure()
    return f"rank {rank.rank} on {rank.host} {rank.reason()}" if rank else job.message or "failed"


def awaits_restart(job: Job) -> bool:
    """A job whose attempt ended and that --restarts still has to act on."""
    return restarts(job) > 0 and failure(job) is not None


def must_act(job: Job) -> bool:
    """Whether a watcher has something to do with JOB, just refreshed: an
    ended attempt to restart, a hung rank, or a lost node."""
    return awaits_restart(job) or bool(hangs.hung_ranks(job)) or bool(recovery_plan.lost_hosts(job))


def handle_end(store: JobStore, job: Job, cause: str, *, lost_hosts=(), verbose: int = 0) -> Job:
    """End JOB's current attempt for CAUSE: stop every rank of it on every node
    but LOST_HOSTS (fenced: it never starts there again), record it, and launch
    the next attempt if the policy allows (on the same nodes, or, with
    LOST_HOSTS, as recovery_plan.next_plan says), else fail the job with CAUSE.
    Returns the job as it now is: its next attempt, or the ended one. A node
    that could not be stopped keeps the stop pending and nothing is launched:
    the next refresh finishes the stop, the next pass acts again."""
    failed_before = job.state == states.FAILED  # its failure was notified, unless a restart awaited it
    restart = RESUMED if launch_interrupted(job) else POLICY if restarts_used(job) < restarts(job) else None
    # Recorded first: the attempt has failed from now on, whatever its ranks
    # say (a hung rank stopped is not a failed one: lifecycle.aggregate), and a
    # watcher killed from here on leaves it to the next pass.
    _record(job, cause, restart)
    job.move_to(lifecycle.aggregate(job))
    store.save(job)
    skip = frozenset(lost_hosts)
    if any(rank.host not in skip for rank in job.ranks):
        acted = lifecycle.stop(store, job, grace=FAILURE_GRACE, skip_hosts=skip, verbose=verbose)
        if acted.failures:
            return job
    _lose(job, skip)
    record = _record(job, cause, restart)  # with the ends the nodes gave
    if skip:  # the lost nodes: what the attempt still runs there is stopped once they answer
        record["lost_hosts"] = sorted(skip)
        record.setdefault("unstopped", sorted(skip & set(record["hosts"])))
    if restart is None:
        message = f"{cause}; no restart left (--restarts {restarts(job)})" if restarts(job) else cause
        _fail(store, job, message, notified=failed_before and not restarts(job))
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
    cause = failure(job) if restarts(job) else None
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


def _ended_for_good(job: Job) -> bool:
    """Whether JOB's current attempt is recorded with no attempt to follow."""
    return any(record["attempt"] == job.attempt and record.get("restart") is None for record in job.attempts)


def _record(job: Job, cause: str, restart: str | None) -> dict:
    """JOB's current attempt in job.attempts, recorded once (again: replaced)."""
    record = next((r for r in job.attempts if r["attempt"] == job.attempt), None)
    if record is None:
        record = {"attempt": job.attempt}
        job.attempts.append(record)
    started = [rank.started_at for rank in job.ranks if rank.started_at]
    ended = [rank.ended_at for rank in job.ranks if rank.ended_at]
    record.update(hosts=[rank.host for rank in job.ranks], started_at=min(started, default=None),
                  ended_at=max(ended, default=None) or record.get("ended_at") or time.time(),
                  cause=cause, restart=restart)
    return record


def _fail(store: JobStore, job: Job, message: str, *, notified: bool = False) -> None:
    """JOB has failed for good, for MESSAGE; its failure is notified unless it was (NOTIFIED)."""
    job.ended_at = job.ended_at or time.time()
    job.message = message
    if not notified:
        notify.record(job, states.FAILED, _tails(job))
    store.save(job, patient=True)
    notify.deliver(store, [job])


def _tails(job: Job) -> dict[int, list[str]]:
    """The end of the first failed rank's log, from the copy kept when it ended, for the message."""
    rank = job.first_failure()
    kept = kept_logs.read(job.id, rank.rank, job.attempt) if rank else None
    return {rank.rank: kept[0][-notify.TAIL_LINES:]} if kept else {}


def _relaunch(store: JobStore, job: Job, lost_hosts, *, verbose: int = 0) -> Job:
    """The next attempt: on the same nodes, or without LOST_HOSTS (a spare takes
    a lost node's rank, or the job goes on with fewer nodes)."""
    from . import plan, recovery_plan, run

    the_plan = (recovery_plan.next_plan(job, lost_hosts, store=store) if lost_hosts
                else plan.replan(job))
    return run.relaunch(store, the_plan, verbose=verbose)


def record_user_restart(job: Job) -> None:
    """`tsubmit restart`: the ended attempt joins job.attempts, its cause what the job says."""
    _record(job, job.message or str(job.state), USER)


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
