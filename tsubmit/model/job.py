"""The Job model: what was submitted, where it runs and the state of each rank."""

import random
import secrets
import time
from dataclasses import dataclass, field

# The states (tsubmit/model/states.py), also imported from here by the model's users.
from .states import (  # noqa: F401
    DELETED,
    FAILED,
    FINISHED_STATES,
    LIVE_RANK_STATES,
    LOST,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    SUCCEEDED,
    UNREACHABLE,
    State,
)

PULL_POLICIES = ("missing", "always", "never")
ENGINES = ("docker", "podman")

_ADJECTIVES = (
    "amber", "brave", "calm", "deft", "eager", "fair", "gentle", "hardy", "ivory", "jolly",
    "keen", "lively", "mellow", "noble", "olive", "proud", "quiet", "rapid", "steady", "tidy",
    "upbeat", "vivid", "witty", "young", "zesty",
)
_NOUNS = (
    "otter", "falcon", "maple", "comet", "badger", "cedar", "heron", "lynx", "orca", "panda",
    "quartz", "raven", "sparrow", "tiger", "walrus", "yak", "zebra", "bison", "koala", "lemur",
)


def new_job_id() -> str:
    return secrets.token_hex(5)


def friendly_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(10, 99)}"


@dataclass
class Rank:
    rank: int
    host: str
    address: str
    nproc: int | None = None
    pid: int | None = None
    pid_start: str | None = None
    state: State = STARTING
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    attempt: int = 1
    # Why a failed rank failed, where its node could tell more than the exit
    # code: under torchrun {worker_rank, local_rank, exit_code (the worker's),
    # launcher_exit_code (torchrun's), error?} (roles/status/files/rank_status.py).
    cause: dict | None = None
    # How many processes the rank's command left running when it ended (a setsid
    # daemon, a killed torchrun's workers), which its node then stopped; None
    # while it runs, or when its node did not say (a rank launched by an older tsubmit).
    leftovers: int | None = None
    # When a refresh first found the rank's node silent (it has not answered
    # since); None while it answers. A node silent past the job's node timeout is lost.
    unreachable_since: float | None = None
    # Seconds the log of a running rank had not grown when its node last told,
    # by the node's own clock (a hang's measure: tsubmit/jobs/hangs.py); None otherwise.
    log_idle: float | None = None

    def __post_init__(self):
        self.state = State(self.state)  # a record read from the store holds its name

    def move_to(self, state: State | str) -> None:
        """Every change of the rank's state comes here (states.State.to)."""
        self.state = self.state.to(state, rank=True)
        if self.state != UNREACHABLE:
            self.unreachable_since = None

    def reason(self) -> str:
        """Why the rank failed, in a few words: "exited with 7 (worker rank 1, local rank 0)"."""
        if self.state == LOST:
            return "ended without an exit code"
        if self.exit_code is None:
            return "could not be started"
        cause = self.cause or {}
        worker = (f" (worker rank {cause['worker_rank']}, local rank {cause['local_rank']})"
                  if "worker_rank" in cause else "")
        return f"exited with {self.exit_code}{worker}"


@dataclass
class Job:
    id: str
    name: str
    cluster: str
    inventory: dict  # {"sources": [...], "group": str, "limit": str | None}
    executor: str  # a name of tsubmit/model/executors.py
    command: list[str]
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    gpus: int | None = None
    max_restarts: int = 0
    archive: str = ""
    git_commit: str | None = None
    state: State = STARTING
    attempt: int = 1
    message: str = ""
    # Settings of optional features, by feature: {"container": {"image", "args", "pull"}, ...}
    extras: dict = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    # A failed rank stops the job's other ranks unless the job asked to keep going.
    keep_going: bool = False
    # What tsubmit still owes some nodes because they could not be reached:
    # {"action": "stop" | "cleanup" | "rollback" | "delete", "hosts": [...], "grace": s, "attempt": K}.
    pending: dict | None = None
    # The controller process launching the job right now ({host, pid, start});
    # while it lives, a rank without files on its node is starting, not lost.
    launcher: dict | None = None
    # The attempts that ended, oldest first, each {attempt, hosts, started_at,
    # ended_at, cause, restart}: restart says how the next attempt came
    # ("policy": --restarts; "resumed": its launch was interrupted; None: none did).
    attempts: list[dict] = field(default_factory=list)
    # The store's write counter when this copy was read (store.JobStore.save).
    revision: int = field(default=0, compare=False)
    ranks: list[Rank] = field(default_factory=list)

    def __post_init__(self):
        self.state = State(self.state)  # a record read from the store holds its name

    def move_to(self, state: State | str) -> None:
        """Every change of the job's state comes here (states.State.to)."""
        self.state = self.state.to(state, rank=False)

    def start_next_attempt(self, ranks: list[Rank]) -> None:
        """Become the next attempt: the job starting again, on RANKS (their hosts
        and numbers, all of them starting)."""
        self.attempt += 1
        self.move_to(STARTING)
        self.message, self.ended_at = "", None
        self.ranks = ranks
        for rank in self.ranks:
            rank.attempt = self.attempt

    def ended_by_tsubmit(self) -> bool:
        """Whether tsubmit ended the current attempt for a cause (a failed rank, a
        lost node, a hung rank: tsubmit/jobs/recovery.py), which makes it a failure
        whatever its ranks' states (a hung rank stopped is a stopped rank)."""
        return any(record["attempt"] == self.attempt and record.get("restart") != "user"
                   for record in self.attempts)

    def restart_cause(self) -> str:
        """Why the attempt before this one ended ('' for the first): the rank's TSUBMIT_RESTART_CAUSE."""
        return next((record["cause"] for record in self.attempts if record["attempt"] == self.attempt - 1),
                    "")

    @property
    def recovery(self) -> dict:
        """How the job recovers (extras["recovery"]): restarts, node_timeout,
        min_nodes, hang_timeout, sync_dirs; a key absent takes its default."""
        return self.extras.get("recovery") or {}

    @property
    def head(self) -> Rank:
        return self.ranks[0]

    def first_failure(self) -> Rank | None:
        """The rank that failed first (the earliest end; a lost rank, whose end
        is not known, after those that failed), or None."""
        failed = [rank for rank in self.ranks if rank.state in (FAILED, LOST)]
        return min(failed, key=lambda rank: (rank.state == LOST, rank.ended_at or float("inf"), rank.rank),
                   default=None)

    def may_run(self) -> bool:
        """Whether any rank may still have processes, this attempt's or one an
        earlier attempt left on a lost node: such a job stays refreshable
        whatever its aggregate state says."""
        return (bool(self.pending) or self.ranks_may_run()
                or any(record.get("unstopped") for record in self.attempts))

    def ranks_may_run(self) -> bool:
        """Whether a rank of the current attempt may still have processes."""
        return any(rank.state in LIVE_RANK_STATES for rank in self.ranks)


# Pending actions by how much they do: a delete (or a cleanup) stops and removes
# every attempt, a stop stops every attempt, a rollback only the one it undoes.
_PENDING_STRENGTH = {"rollback": 0, "stop": 1, "cleanup": 2, "delete": 3}


def merged_pending(stored: dict | None, read: dict | None, ours: dict | None) -> dict | None:
    """The pending action to keep when a copy of a job that read READ as its
    pending action now holds OURS, and another process saved STORED meanwhile.
    What either owes a node is kept: a finished action is dropped only when
    nobody changed it meanwhile, and two actions become the stronger one on
    the union of their hosts."""
    if ours is None:
        return None if stored == read else stored
    if stored is None or stored == read:
        return ours
    stronger = max(stored, ours, key=lambda p: _PENDING_STRENGTH.get(p["action"], 1))
    return {**stronger, "hosts": sorted(set(stored["hosts"]) | set(ours["hosts"])),
            "grace": min(stored["grace"], ours["grace"])}
