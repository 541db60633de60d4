"""Where a job's ranks live: each rank's node, its connection and remote root, read
from the job's inventory now, and the node-side scripts tsubmit runs there itself.

`tsubmit shell`, `forward`, `fetch` and `logs -f` reach a rank's node over
ssh (ssh_session.py), because Ansible cannot hold a session, a stream or a
forward. What runs on the node is a small POSIX sh script of node_scripts/,
handed to `sh -c` with every value as a positional argument, so nothing a
user typed is parsed by a shell. The job's files on a node are found by the
layout of tsubmit/model/layout.py, whose paths the scripts receive as arguments
(under the root as layout.home_relative gives it: the node resolves its home);
the nodes are asked, whatever the local record says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..model import layout
from ..model.job import Job, Rank
from ..paths import ansible_dir
from . import ssh

SCRIPTS = Path(__file__).resolve().parent / "node_scripts"


def node_script(name: str, *library: str) -> str:
    """The text of node_scripts/NAME, after the files LIBRARY of the collection's
    node library (roles/node_lib/files/: shell functions the roles' scripts use too)."""
    lib = ansible_dir() / "ansible_collections" / "tsubmit" / "cluster" / "roles" / "node_lib" / "files"
    return "".join((lib / part).read_text() for part in library) + (SCRIPTS / name).read_text()


@dataclass(frozen=True)
class Place:
    """Where one rank of a job lives: its node's connection and remote root."""

    job: Job
    rank: Rank
    conn: ssh.Connection
    root: str  # tsubmit_remote_root, as the inventory gives it (may start with ~)

    @property
    def where(self) -> str:
        """`node1 (rank 1 of job 3f2a...)`, for messages."""
        return f"{self.rank.host} (rank {self.rank.rank} of job {self.job.id})"


def select_ranks(job: Job, rank_number: int | None, all_ranks: bool = False) -> list[Rank]:
    """--rank R (default 0) or --all; a rank the job does not have is an error naming its ranks."""
    if all_ranks and rank_number is not None:
        raise UsageError("give --rank R or --all, not both")
    if all_ranks:
        return list(job.ranks)
    number = rank_number or 0
    if not 0 <= number < len(job.ranks):
        raise UsageError(f"--rank {number} is out of range: job {job.id} has ranks 0 to {len(job.ranks) - 1}")
    return [job.ranks[number]]


def places(job: Job, ranks: list[Rank]) -> list[Place]:
    """Each rank's node, read from the job's inventory now (vault file included), so a
    changed address or bastion in the inventory is followed."""
    from .clusters import host_variables

    host_vars = host_variables(job.inventory["sources"], sorted({rank.host for rank in ranks}),
                               job.inventory.get("vault_password_file"))
    found = []
    for rank in ranks:
        variables = host_vars[rank.host]
        root = ssh.rendered(rank.host, variables, ["tsubmit_remote_root"]).get("tsubmit_remote_root")
        found.append(Place(job, rank, ssh.connection(rank.host, variables),
                           str(root or layout.DEFAULT_ROOT)))
    return found
