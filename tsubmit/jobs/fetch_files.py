"""`tsubmit fetch`: files and folders of a job's workdir brought home.

One tar stream per node over ssh (GNU tar's sparse members, so a
preallocated checkpoint's holes never travel), read here with tarfile as it
arrives. A path is checked three times: here (relative, no `..`), on the node
(node_scripts/fetch.sh: realpath stays inside the job's workdir, and so does
every symbolic link under it), and member by member as the stream is
unpacked (nothing lands outside its folder, no device files, no set-id bits).

The streams are unpacked into a scratch folder inside DEST first, so a
refused member, a broken stream or an existing file found late leaves DEST
as it was; only when every node's stream is complete and nothing would be
overwritten unasked is the tree moved into place, file by file (renames on
one filesystem: the bytes are not copied again).
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import LaunchError, TsubmitError, UsageError
from ..model import layout
from ..model.workdir_paths import inside_workdir
from ..nodes import ssh
from ..nodes.places import Place, node_script
from ..nodes.ssh_session import Session

# fetch.sh's own exit codes (tar's are 0, 1 and 2).
REFUSED, MISSING, NO_WORKDIR = 65, 66, 67
TAR_FILE_CHANGED = 1


def check_paths(paths: list[str] | tuple[str, ...]) -> list[str]:
    """The paths, normalised, if each names something inside the workdir; else a
    UsageError naming the path."""
    checked = inside_workdir(paths, "fetch:", "paths relative to the job's workdir on the node, "
                                              "e.g. out/model.pt")
    if not checked:
        raise UsageError("fetch: name at least one PATH in the job's workdir")
    return checked


@dataclass
class Stream:
    """One node's stream: what it brought and how it ended."""

    place: Place
    into: Path  # the rank's scratch folder
    received: int = 0  # bytes of the stream read so far
    files: int = 0
    warnings: list[str] = field(default_factory=list)
    error: TsubmitError | None = None
    session: Session | None = None


class _Refused(Exception):
    pass


class _Counting:
    """A read-only file over the ssh's stdout that counts what passed."""

    def __init__(self, raw, stream: Stream):
        self.raw, self.stream = raw, stream

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.stream.received += len(data)
        return data


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _check_member(member: tarfile.TarInfo, into: Path) -> None:
    """Refuse what could land outside INTO or make the local tree unsafe; make what is
    kept the user's own (tarfile run as root would restore the node's owners)."""
    root = os.path.realpath(into)
    name = member.name
    if name.startswith("/") or ".." in PurePosixPath(name).parts:
        raise _Refused(f"{name} leaves the fetched folder")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise _Refused(f"{name} is a device, fifo or other special file")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(root, target):
        raise _Refused(f"{name} would be written outside the fetched folder (through a symbolic link)")
    if member.issym():
        if member.linkname.startswith("/"):
            raise _Refused(f"{name} is a symbolic link to an absolute path ({member.linkname})")
        pointed = os.path.realpath(os.path.join(root, os.path.dirname(name), member.linkname))
        if not _inside(root, pointed):
            raise _Refused(f"{name} is a symbolic link pointing outside the fetched folder "
                           f"({member.linkname})")
    if member.islnk() and not _inside(root, os.path.realpath(os.path.join(root, member.linkname))):
        raise _Refused(f"{name} is a hard link to {member.linkname}, outside the fetched folder")
    # No set-id or sticky bits; the owner may always read and write what is his.
    member.mode = (member.mode & 0o777) | (0o700 if member.isdir() else 0o600)
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""


def _receive(stream: Stream, paths: list[str]) -> None:
    """Run one node's stream to its end; the outcome is recorded in STREAM."""
    place = stream.place
    argv = ssh.command_argv(place.conn, node_script("fetch.sh", "workdir_check.sh"),
                            [layout.workdir(place.job.id, layout.home_relative(place.root)), place.job.id,
                             place.rank.host, *paths], tty=False)
    session = Session(place.conn, argv, place.where)
    stream.session = session
    process = session.process
    refused = broken = local = None
    try:
        with tarfile.open(fileobj=_Counting(session.stdout, stream), mode="r|") as archive:
            for member in archive:
                _check_member(member, stream.into)
                archive.extract(member, stream.into)
                stream.files += member.isreg() or member.islnk()
    except _Refused as error:
        refused = error
        process.kill()
    except (tarfile.TarError, EOFError) as error:
        broken = error
        process.kill()
    except OSError as error:  # writing here: a full disk, a folder we may not write
        local = error
        process.kill()
    code = session.wait()
    lines = [line.strip() for line in session.stderr.splitlines() if line.strip()]
    host, where = place.rank.host, place.where
    if refused is not None:
        stream.error = UsageError(f"fetch from {where}: refused {refused}; nothing was written")
    elif local is not None:
        stream.error = UsageError(f"fetch from {where}: cannot write here: {local}; nothing was written")
    elif code in (REFUSED, MISSING):
        stream.error = UsageError(f"fetch: {lines[-1] if lines else 'path refused on ' + host}")
    elif code == NO_WORKDIR:
        stream.error = LaunchError(f"cannot fetch from {where}", {host: lines[-1] if lines else "no workdir"})
    elif session.unreachable:
        stream.error = session.unreachable_error()
    elif code not in (0, TAR_FILE_CHANGED) or broken is not None:
        reason = lines[-1] if lines else (str(broken) if broken else f"exited with {code}")
        stream.error = LaunchError(f"cannot fetch from {where}: the stream broke", {host: reason})
    elif code == TAR_FILE_CHANGED:
        # A running job writes its files while they are read: tar says which.
        stream.warnings = [f"{host}: {line}" for line in lines] or [f"{host}: tar exited with 1"]


def _outside_links(into: Path) -> str | None:
    """A symbolic link of the finished tree that resolves outside INTO, if any (a later
    member can change where an earlier link leads)."""
    root = os.path.realpath(into)
    for folder, dirs, files in os.walk(into):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path) and not _inside(root, os.path.realpath(path)):
                return os.path.relpath(path, into)
    return None


def _plan_moves(scratch: Path, dest: Path, overwrite: bool) -> list[tuple[Path, Path, bool]]:
    """(source, target, is a folder) for everything of SCRATCH, parents first; a
    UsageError naming the first target that may not be replaced."""
    moves: list[tuple[Path, Path, bool]] = []
    for folder, dirs, files in os.walk(scratch):
        for name in sorted(dirs) + sorted(files):
            source = Path(folder) / name
            target = dest / source.relative_to(scratch)
            is_folder = source.is_dir() and not source.is_symlink()
            if os.path.lexists(target):
                target_is_folder = target.is_dir() and not target.is_symlink()
                if is_folder and not target_is_folder:
                    raise UsageError(f"{target} exists and is not a folder; remove it, or fetch to "
                                     "another --dest")
                if not is_folder and target_is_folder:
                    raise UsageError(f"{target} is a folder; remove it, or fetch to another --dest")
                if not is_folder and not overwrite:
                    raise UsageError(f"{target} exists; add --overwrite to replace it, or fetch to "
                                     "another --dest")
            moves.append((source, target, is_folder))
    return moves


def _move(moves: list[tuple[Path, Path, bool]]) -> None:
    for source, target, is_folder in moves:
        if is_folder:
            if not target.is_dir():
                target.mkdir()
                shutil.copystat(source, target)
        else:
            # shutil.move renames, or copies when TARGET is another filesystem
            # mounted inside DEST.
            shutil.move(source, target)


def _pre_check(dest: Path, roots: list[Path], paths: list[str], overwrite: bool) -> None:
    """An existing file that would be replaced, named before anything travels."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--dest {dest} exists and is not a folder")
    for root in roots:
        for path in paths:
            target = root / path
            if os.path.lexists(target) and not target.is_dir() and not overwrite:
                raise UsageError(f"{target} exists; add --overwrite to replace it, or fetch to "
                                 "another --dest")


@dataclass
class Fetched:
    place: Place
    folder: Path  # where its paths landed (DEST or DEST/rank-R)
    files: int
    size: int
    warnings: list[str]


def fetch(found: list[Place], paths: list[str], dest: str | Path, *, per_rank: bool, overwrite: bool,
          progress: Callable[[list[Stream]], None] | None = None) -> list[Fetched]:
    """Bring PATHS of each rank's workdir to DEST (DEST/rank-R/PATH when PER_RANK,
    DEST/PATH otherwise), one stream per node at once. PROGRESS, when given, is
    called with the streams about five times a second while they run."""
    paths = check_paths(paths)
    dest = Path(dest).expanduser()
    roots = [dest / f"rank-{place.rank.rank}" if per_rank else dest for place in found]
    _pre_check(dest, roots, paths, overwrite)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".tsubmit-fetch-", dir=dest))
    except OSError as error:
        raise UsageError(f"--dest {dest}: cannot write there ({error.strerror})") from None
    try:
        streams = []
        for place in found:
            into = scratch / f"rank-{place.rank.rank}" if per_rank else scratch
            into.mkdir(exist_ok=True)
            streams.append(Stream(place, into))
        _run_all(streams, paths, progress)
        errors = [stream.error for stream in streams if stream.error is not None]
        if errors:
            usage = [error for error in errors if isinstance(error, UsageError)]
            if usage:
                raise usage[0]
            hosts = {host: text for error in errors
                     for host, text in getattr(error, "host_errors", {}).items()}
            raise LaunchError(str(errors[0]) if len(errors) == 1 else
                              "cannot fetch from every node; nothing was written", hosts)
        for stream in streams:
            outside = _outside_links(stream.into)
            if outside:
                raise UsageError(f"fetch from {stream.place.where}: refused {outside}, a symbolic link "
                                 "pointing outside the fetched folder; nothing was written")
        sizes = {id(stream): _tree_size(stream.into) for stream in streams}
        try:
            _move(_plan_moves(scratch, dest, overwrite))
        except OSError as error:
            raise UsageError(f"cannot write into {dest}: {error} (what was moved before stays)") from None
        return [Fetched(stream.place, root, stream.files, sizes[id(stream)], stream.warnings)
                for stream, root in zip(streams, roots, strict=True)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tree_size(folder: Path) -> int:
    return sum(os.lstat(os.path.join(parent, name)).st_size
               for parent, _, files in os.walk(folder) for name in files)


def _run_all(streams: list[Stream], paths: list[str], progress) -> None:
    threads = [threading.Thread(target=_receive, args=(stream, paths), daemon=True) for stream in streams]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
            if progress:
                progress(streams)
    except KeyboardInterrupt:
        for stream in streams:
            if stream.session is not None and stream.session.process.poll() is None:
                stream.session.process.kill()
        for thread in threads:
            thread.join(timeout=5)
        raise


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


class ProgressLine:
    """One line on a terminal, rewritten in place: bytes received per node."""

    def __init__(self, out=None):
        self.out = out or sys.stderr
        self.shown = False
        self.started = time.monotonic()

    def __call__(self, streams: list[Stream]) -> None:
        total = sum(stream.received for stream in streams)
        parts = ", ".join(f"rank {s.place.rank.rank} {size_text(s.received)}" for s in streams[:4])
        more = f" (+{len(streams) - 4} nodes)" if len(streams) > 4 else ""
        rate = total / max(time.monotonic() - self.started, 1e-3)
        self.out.write(f"\rfetching {size_text(total)} at {size_text(rate)}/s: {parts}{more}\033[K")
        self.out.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.out.write("\n")
            self.out.flush()
