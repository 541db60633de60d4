"""Job and rank states: one type, the changes it allows, and which states end.

A rank's state is what its node last said (roles/status/files/rank_status.py);
a job's is derived from its ranks' (lifecycle.aggregate). Every change goes
through `State.to`, which refuses one the model does not allow: a state change
that makes no sense is a bug to hear of, not a record to write.
"""

from enum import StrEnum


class IllegalTransition(ValueError):
    """A state change the model does not allow (a bug in tsubmit, never the user's)."""


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    # A rank whose node answers but whose process is gone without an exit code.
    LOST = "lost"
    # A rank (or job) whose node does not answer.
    UNREACHABLE = "unreachable"
    # A job whose stop could not reach every node: it stays refreshable, and the
    # next stop, status or list finishes the stop there once the node answers.
    STOPPING = "stopping"
    # A job whose pending delete was finished by a refresh: gone from the store,
    # this copy is the last word on it.
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        """Whether the attempt has ended in this state (its ranks may still leave processes)."""
        return self in FINISHED_STATES

    def to(self, new: "State | str", *, rank: bool) -> "State":
        """NEW, when a job (or with RANK, a rank) in this state may move to it."""
        new = State(new)
        if new != self and new not in (_RANK_MOVES if rank else _JOB_MOVES)[self]:
            raise IllegalTransition(f"a {'rank' if rank else 'job'} cannot go from {self} to {new}")
        return new


STARTING, RUNNING, SUCCEEDED, FAILED, STOPPED, LOST, UNREACHABLE, STOPPING, DELETED = State
FINISHED_STATES = frozenset({SUCCEEDED, FAILED, STOPPED, LOST, DELETED})
# A rank in one of these may still have processes on its node.
LIVE_RANK_STATES = frozenset({STARTING, RUNNING, UNREACHABLE})
# Job states during which a job of the same name counts as running (run --if-running).
ACTIVE_STATES = frozenset({STARTING, RUNNING, UNREACHABLE, STOPPING})

# A rank moves freely among the live states, as its node says, ends once per
# attempt, and starts again only as the next attempt.
_RANK_MOVES = {
    **{state: LIVE_RANK_STATES | {SUCCEEDED, FAILED, STOPPED, LOST} for state in LIVE_RANK_STATES},
    **{state: frozenset({STARTING}) for state in (SUCCEEDED, FAILED, STOPPED, LOST)},
    STOPPING: frozenset(), DELETED: frozenset(),
}
# A job's state follows its ranks' while they may run; an ended job moves only
# to its next attempt, to a stop pending on a node that did not answer, or to
# deleted; a deleted job is gone.
_JOB_MOVES = {
    **{state: frozenset(State) - {STARTING} for state in (STARTING, RUNNING, UNREACHABLE, STOPPING)},
    **{state: frozenset({STARTING, STOPPING, DELETED}) for state in (SUCCEEDED, FAILED, STOPPED, LOST)},
    DELETED: frozenset(),
}
