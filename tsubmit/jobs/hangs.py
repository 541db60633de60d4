"""Hung ranks (issue 28, item 4): a rank whose processes live but whose log has
not grown for the job's hang timeout (`--hang-timeout`, extras["recovery"]).

The measure is the node's own: each status read reports how long a running
rank's log has not grown, by the node's clock (roles/status/files/
rank_status.py), and the refresh keeps it on the Rank (log_idle), so no skew
between the controller's clock and a node's enters it.

Only a watcher acts on a hang (recovery.act: a `tsubmit watch` pass, `run
--wait`); status and list only show. Before the attempt ends (recovery.handle_end),
the evidence: the post-mortem, while every process still stands where it
hung, and the hang's notification.
"""

from ..model import states
from ..model.job import Job, Rank
from ..nodes.actions import launcher_alive
from ..output import duration
from . import notify, postmortem


def timeout(job: Job) -> float | None:
    return job.recovery.get("hang_timeout")


def hung_ranks(job: Job) -> list[Rank]:
    """The ranks of JOB's running attempt (just refreshed) whose log had not
    grown for the hang timeout when their node last told; none while another
    tsubmit launches or stops it."""
    limit = timeout(job)
    if limit is None or job.state != states.RUNNING or job.pending or launcher_alive(job):
        return []
    return [rank for rank in job.ranks
            if rank.state == states.RUNNING and rank.log_idle is not None and rank.log_idle >= limit]


def cause(ranks: list[Rank]) -> str:
    """Why the attempt ends: 'hung: rank 1 on node2, no output for 25s'."""
    return "hung: " + "; ".join(f"rank {rank.rank} on {rank.host}, no output for {duration(rank.log_idle)}"
                                for rank in ranks)


def take_evidence(job: Job, ranks: list[Rank], *, verbose: int = 0) -> None:
    """Before anything of JOB is stopped: its post-mortem, and the hang's
    notification (recorded: the caller saves the job)."""
    postmortem.collect(job, "hang", hung=ranks, verbose=verbose)
    notify.record(job, "hung", ranks=[rank.rank for rank in ranks])
