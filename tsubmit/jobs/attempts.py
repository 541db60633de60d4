"""A job's attempts and its recovery settings, read from its record: what
--restarts and --hang-timeout allow, why the current attempt must end, whether
an ended attempt awaits its restart, and job.attempts' records.

Pure reads and writes of the Job (and whether its launcher lives): the
recovery engine (recovery.py), the waits (wait.py), `tsubmit watch`, the
refresh (lifecycle.py) and the notifications (notify.py) all ask here, so none
of them imports another to learn it.
"""

import time

from ..model import states
from ..model.job import Job
from ..nodes.actions import launcher_alive

# How the attempt after a recorded one came (Job.attempts' "restart").
POLICY = "policy"  # --restarts
RESUMED = "resumed"  # its launch was interrupted: launched again, not counted
USER = "user"  # tsubmit restart


def restarts(job: Job) -> int:
    return int(job.recovery.get("restarts", 0))


def restarts_used(job: Job) -> int:
    """The restarts --restarts made since the job was submitted or last
    restarted by hand, this attempt's own record aside."""
    used = 0
    for record in job.attempts:
        if record["attempt"] != job.attempt:
            used = 0 if record.get("restart") == USER else used + (record.get("restart") == POLICY)
    return used


def acted_on(job: Job) -> bool:
    """Whether a watcher acts on JOB's attempts: it may restart them, or end a hung one."""
    return bool(restarts(job) or job.recovery.get("hang_timeout"))


def launch_interrupted(job: Job) -> bool:
    """Whether the launch of JOB's attempt died midway: its launcher is gone and some rank never started."""
    return (job.launcher is not None and not launcher_alive(job)
            and any(rank.pid is None for rank in job.ranks))


def failure(job: Job) -> str | None:
    """Why JOB's current attempt must end, as its record says after a refresh,
    when nobody has acted on it yet (a rank failed, or its launch died midway);
    else None."""
    if job.state != states.FAILED or job.pending or launcher_alive(job) or ended_for_good(job):
        return None
    if launch_interrupted(job):
        return f"the launch of attempt {job.attempt} was interrupted"
    rank = job.first_failure()
    return f"rank {rank.rank} on {rank.host} {rank.reason()}" if rank else job.message or "failed"


def ended_for_good(job: Job) -> bool:
    """Whether JOB's current attempt is recorded with no attempt to follow."""
    return any(record["attempt"] == job.attempt and record.get("restart") is None for record in job.attempts)


def awaits_restart(job: Job) -> bool:
    """A job whose attempt ended and that --restarts still has to act on."""
    return restarts(job) > 0 and failure(job) is not None


def record(job: Job, cause: str, restart: str | None) -> dict:
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


def record_user_restart(job: Job) -> None:
    """`tsubmit restart`: the ended attempt joins job.attempts, its cause what the job says."""
    record(job, job.message or str(job.state), USER)


def refreshed_by_watch(job: Job) -> bool:
    if awaits_restart(job):
        return True
    return job.may_run() and (bool(job.extras.get("notify")) or acted_on(job))
