"""Copies of the ranks' logs on the controller, for when a node is gone.

A node that is lost cannot be read afterwards, so the copy is kept while the
rank runs and brought up to date by every refresh that reads its node
(lifecycle._read; roles/status/files/rank_status.py reads the log in the same
pass as the rank's state):

- a watched job's running ranks (attempts.refreshed_by_watch: a watcher's pass, `run
  --wait`, and any status or list of such a job) send what their log gained
  since the copy's end, complete lines only: one pass costs the new lines,
  not the log;
- a rank seen ending (failed, lost, stopped: by its own exit, by `stop`, or
  because another rank failed) sends the rest of its log, whatever job it is.

The copy is the log's last MiB (at most two between trims), under the state
dir: logs/<job>/rank-<N>/attempt-<K>.log, private like the job store; its
first line records the byte of the node's log it ends at (where the next
update starts). `tsubmit logs` shows the copy when the node does not answer, saying
that it is one and from when (the copy's last update); deleting the job
removes its copies.
"""

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path

from ..paths import ensure_private_dir, state_dir

KEEP_BYTES = 1024 * 1024
# The copy's first line: the byte of the node's log it ends at, fixed width so
# that it is rewritten in place as lines are added.
_HEADER = b"tsubmit kept log, up to byte %020d\n"
_HEADER_SIZE = len(_HEADER % 0)


def _path(job_id: str, rank: int, attempt: int) -> Path:
    return state_dir() / "logs" / job_id / f"rank-{rank}" / f"attempt-{attempt}.log"


def _end_of(handle) -> int | None:
    """The node's byte a copy ends at, from its header; None for a copy with
    none (kept whole when its rank ended, by tsubmit before these headers)."""
    header = handle.read(_HEADER_SIZE)
    prefix = _HEADER.split(b"%")[0]
    if len(header) == _HEADER_SIZE and header.startswith(prefix) and header[len(prefix):-1].isdigit():
        return int(header[len(prefix):-1])
    return None


def end(job_id: str, rank: int, attempt: int) -> int:
    """The byte of the rank's log on its node that the copy ends at (0: no copy)."""
    try:
        with open(_path(job_id, rank, attempt), "rb") as handle:
            return _end_of(handle) or 0
    except OSError:
        return 0


def keep(job_id: str, rank: int, attempt: int, text: str, start: int, stop: int) -> None:
    """Add TEXT, bytes START to STOP of the rank's log on its node, to the copy:
    after it when it starts where the copy ends, in its place when it starts
    later (more than KEEP_BYTES were written since), not at all when another
    process brought the copy further meanwhile. A copy nothing was added to is
    marked as current (its time). Lines are added in place; the copy is cut
    to its last MiB when it has grown to twice that."""
    path = _path(job_id, rank, attempt)
    ensure_private_dir(path.parent)
    data = text.encode()
    with _locked(path):
        if not path.exists():
            _write(path, data, stop)
            return
        with open(path, "r+b") as handle:
            copy_end = _end_of(handle)
            if copy_end is not None and start < copy_end:
                return
            if copy_end is None or start > copy_end:
                _write(path, data, stop)
            elif not data:
                os.utime(path)
            elif handle.seek(0, os.SEEK_END) + len(data) > _HEADER_SIZE + 2 * KEEP_BYTES:
                handle.seek(_HEADER_SIZE)
                _write(path, handle.read() + data, stop)
            else:  # the lines, then the header: killed between, the next keep adds them again
                handle.write(data)
                handle.seek(0)
                handle.write(_HEADER % stop)


def _last_mib(data: bytes) -> bytes:
    """DATA's last KEEP_BYTES, from a line's start."""
    if len(data) <= KEEP_BYTES:
        return data
    data = data[len(data) - KEEP_BYTES:]
    return data[data.find(b"\n") + 1:] if b"\n" in data[:-1] else data


def _write(path: Path, data: bytes, stop: int) -> None:
    """A new copy of DATA's last MiB, ending at byte STOP of the node's log."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_HEADER % stop + _last_mib(data))
    os.replace(partial, path)


@contextlib.contextmanager
def _locked(path: Path):
    """Two refreshes at once (a watcher and a `status`) update a copy in turn."""
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def read(job_id: str, rank: int, attempt: int) -> tuple[list[str], float] | None:
    """The kept copy's lines (its last MiB) and when it was last brought up to date, or None."""
    path = _path(job_id, rank, attempt)
    try:
        with open(path, "rb") as handle:
            if _end_of(handle) is None:
                handle.seek(0)
            data = handle.read()
            kept_at = os.fstat(handle.fileno()).st_mtime
    except OSError:
        return None
    return _last_mib(data).decode(errors="replace").splitlines(), kept_at


def when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def remove(job_id: str) -> None:
    shutil.rmtree(state_dir() / "logs" / job_id, ignore_errors=True)
