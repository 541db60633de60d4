"""Copies of the ranks' logs on the controller, for when a node is gone.

The refresh that sees a rank's attempt end (its node answered) keeps the last
MiB of its log (roles/status/files/rank_status.py reads it in the same pass),
under the state dir: logs/<job>/rank-<N>/attempt-<K>.log, private like the
job store. `tsubmit logs` shows the copy when the node does not answer,
saying that it is one and from when; deleting the job removes its copies.
"""

import os
import shutil
import time
from pathlib import Path

from .paths import ensure_private_dir, state_dir

KEEP_BYTES = 1024 * 1024


def _path(job_id: str, rank: int, attempt: int) -> Path:
    return state_dir() / "logs" / job_id / f"rank-{rank}" / f"attempt-{attempt}.log"


def keep(job_id: str, rank: int, attempt: int, text: str) -> None:
    path = _path(job_id, rank, attempt)
    ensure_private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def read(job_id: str, rank: int, attempt: int) -> tuple[list[str], float] | None:
    """The kept copy's lines and when it was kept, or None."""
    path = _path(job_id, rank, attempt)
    try:
        return path.read_text(errors="replace").splitlines(), path.stat().st_mtime
    except OSError:
        return None


def when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def remove(job_id: str) -> None:
    shutil.rmtree(state_dir() / "logs" / job_id, ignore_errors=True)
