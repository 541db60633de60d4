"""Pack a working directory into one deterministic, content-addressed .tar.gz.

Walks the tree top-down honouring .gitignore/.tsubmitignore with git's rules, never
entering ignored folders. The name is a sha256 of paths, kinds, exec bits and bytes but
not of mtimes or owners, so a fresh checkout or a `touch` reuses the archive already built.
Sparse files are packed as sparse members, so they stay sparse where they are unpacked; a
tree the nodes could not unpack within the job's folder is refused (UnsafeTree).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

IGNORE_FILES = (".gitignore", ".tsubmitignore")  # same folder: read in this order
ALWAYS_SKIPPED_DIRS = frozenset({".git", "__pycache__"})

_CHUNK = 1 << 20
# Bump when the digest input or the archive layout changes, so caches built by
# an older version are never mistaken for the new format.
_DIGEST_SALT = b"tsubmit-archive-v1\0"

Kind = Literal["file", "link", "dir"]


@dataclass(frozen=True)
class Archive:
    """A packed tree. `files` counts every entry packed: files, symlinks and
    directories (the root itself excluded), i.e. len(included_paths(...))."""

    path: Path
    digest: str
    files: int
    size: int


@dataclass(frozen=True)
class _Entry:
    rel: str  # POSIX path relative to the root, no trailing slash
    kind: Kind
    path: str  # where it is on disk

    @property
    def listed(self) -> str:
        return self.rel + "/" if self.kind == "dir" else self.rel


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    excludes: bool  # False for a `!negation`
    dir_only: bool


@dataclass(frozen=True)
class _Layer:
    prefix: str  # folder holding the ignore file, relative to the root, "" or "a/b/"
    rules: tuple[_Rule, ...]  # last pattern first: in git the last match wins


def included_paths(workdir: Path) -> list[str]:
    """Sorted POSIX relative paths that pack() would put in the archive.

    Directories end with '/' (and are packed, so empty ones survive); files and
    symlinks do not. The root itself is not listed.
    """
    return [e.listed for e in _walk(_check_root(workdir))]


class UnsafeTree(OSError):
    """The tree holds an entry that would make a node write outside the job's tree."""


class TreeChanged(OSError):
    """A file of the tree was written to while it was packed: the archive would not be its digest's."""

    def __init__(self, path: str):
        super().__init__(f"{path} changed while it was packed; pack again once nothing writes to it, "
                         "or add it to .tsubmitignore")


def pack(workdir: Path, dest_dir: Path) -> Archive:
    """Digest the tree; reuse dest_dir/<digest>.tar.gz if present, else write it atomically.

    dest_dir is created if needed, and left out of the archive if it lies inside workdir.
    Raises UnsafeTree for a tree the node could not unpack within the job's folder.
    """
    root = _check_root(workdir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    entries = _walk(root, prune=_inner_rel(root, dest_dir))
    _check_meta_folder(root, entries)
    records = _records(entries)
    digest = _digest(records)
    final = dest_dir / f"{digest}.tar.gz"
    if not final.exists():
        _write_atomically(entries, records, final)
    return Archive(path=final, digest=digest, files=len(entries), size=final.stat().st_size)


# Where every node writes the job's job.json, inside the unpacked tree.
META_FOLDER = ".tsubmit"
META_FILE = f"{META_FOLDER}/job.json"


def _check_meta_folder(root: Path, entries: list[_Entry]) -> None:
    """The node writes .tsubmit/job.json into the unpacked tree: through a
    .tsubmit or job.json that is a symbolic link, that write would land
    wherever the link points (any file the node's user may write)."""
    for entry in entries:
        expected = {META_FOLDER: "dir", META_FILE: "file"}.get(entry.rel)
        if expected and entry.kind != expected:
            what = {"link": "a symbolic link", "dir": "a folder", "file": "a file"}[entry.kind]
            raise UnsafeTree(
                f"{root / entry.rel} is {what}; tsubmit writes {META_FILE} into the job's tree on "
                f"every node, which must stay inside it: remove it, or add {entry.rel} to .tsubmitignore")


def git_commit(workdir: Path) -> str | None:
    """HEAD commit of the git repository containing workdir, or None. Never raises."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(workdir), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    sha = proc.stdout.strip()
    return sha if proc.returncode == 0 and sha else None


def _open_file(path: str) -> BinaryIO:
    # The only place a file of the tree is opened, so tests can prove what is never read.
    return open(path, "rb")


def _check_root(workdir: Path) -> Path:
    if not workdir.exists():
        raise FileNotFoundError(f"working directory does not exist: {workdir}")
    if not workdir.is_dir():
        raise NotADirectoryError(f"working directory is not a directory: {workdir}")
    return workdir


def _inner_rel(root: Path, inner: Path) -> str | None:
    """`inner` relative to `root` when strictly inside it, else None."""
    rel = os.path.relpath(inner.resolve(), root.resolve())
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
        return None
    return Path(rel).as_posix()


# --- walking -----------------------------------------------------------------


def _walk(root: Path, prune: str | None = None) -> list[_Entry]:
    out: list[_Entry] = []
    _walk_dir(str(root), "", (), prune, out)
    # Sorting on the listed form keeps every directory right before its content.
    out.sort(key=lambda e: e.listed)
    return out


def _walk_dir(
    dirpath: str, prefix: str, layers: tuple[_Layer, ...], prune: str | None, out: list[_Entry]
) -> None:
    with os.scandir(dirpath) as it:
        children = list(it)
    by_name = {c.name: c for c in children}
    lines: list[str] = []
    for name in IGNORE_FILES:
        found = by_name.get(name)
        # Like git, an ignore file that is a symlink is not honoured.
        if found is not None and found.is_file(follow_symlinks=False):
            lines += _read_ignore_file(found.path)
    if lines:
        layers = (*layers, _Layer(prefix, _compile(lines)))

    for child in children:
        rel = prefix + child.name
        if child.is_dir(follow_symlinks=False):
            if child.name in ALWAYS_SKIPPED_DIRS or rel == prune or _ignored(layers, rel, True):
                continue
            out.append(_Entry(rel, "dir", child.path))
            _walk_dir(child.path, rel + "/", layers, prune, out)
        elif child.name == ".git":
            continue  # a worktree's or submodule's .git file points outside the tree
        elif child.is_symlink() or child.is_file(follow_symlinks=False):
            if _ignored(layers, rel, False):
                continue
            kind: Kind = "link" if child.is_symlink() else "file"
            out.append(_Entry(rel, kind, child.path))
        # Sockets, FIFOs and devices mean nothing on another machine: skipped.


def _read_ignore_file(path: str) -> list[str]:
    with _open_file(path) as f:
        text = f.read().decode("utf-8", "surrogateescape")
    return text.removeprefix("\ufeff").splitlines()


def _compile(lines: list[str]) -> tuple[_Rule, ...]:
    rules = []
    for line in lines:
        try:
            rule = _rule(line)
        except (ValueError, re.error):
            continue  # git silently drops a malformed pattern; so do we
        if rule is not None:
            rules.append(rule)
    return tuple(reversed(rules))


def _rule(line: str) -> _Rule | None:
    """One line of an ignore file as git reads it (gitignore(5)); None for a blank
    line or a comment. Its regex matches the entry itself, relative to the ignore
    file's folder, never what a matched folder holds: the walker never enters an
    ignored folder, and a folder kept by a later `!pattern` is judged entry by
    entry, as git does. (pathspec matches flat lists of paths, where a folder's
    pattern also matches its content; its public API cannot say which matched,
    so `*` then `!*/` there leaves a folder ignored.)"""
    while line.endswith(" ") and not line.endswith("\\ "):
        line = line[:-1]  # trailing spaces go, unless escaped
    if not line or line.startswith("#"):
        return None
    excludes = not line.startswith("!")
    line = line.removeprefix("!") if not excludes else line
    dir_only = line.endswith("/")
    body = line.removesuffix("/")
    anchored = "/" in body  # at the start or in the middle: relative to the file's folder
    body = body.removeprefix("/")
    if not body:
        raise ValueError("empty pattern")
    if not anchored:
        return _Rule(re.compile("(?:.*/)?" + _glob(body), re.DOTALL), excludes, dir_only)
    segments = body.split("/")
    parts = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":  # leading or inner: no folder or any; trailing: all inside
            parts.append(".*" if last else "(?:.*/)?")
        else:
            parts.append(_glob(segment) + ("" if last else "/"))
    return _Rule(re.compile("".join(parts), re.DOTALL), excludes, dir_only)


_POSIX_CLASSES = {"alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "digit": "0-9",
                  "lower": "a-z", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
                  "space": " \\t\\n\\r\\f\\v", "upper": "A-Z", "xdigit": "0-9a-fA-F"}


def _glob(segment: str) -> str:
    """A regex for one path component of a pattern: `*`, `?`, `[...]` and `\\`
    escapes as git's wildmatch reads them, none of them matching `/`."""
    out, at = [], 0
    while at < len(segment):
        char = segment[at]
        if char == "\\":
            if at + 1 == len(segment):
                raise ValueError("trailing backslash")
            out.append(re.escape(segment[at + 1]))
            at += 2
        elif char == "*":
            while at < len(segment) and segment[at] == "*":
                at += 1  # `**` inside a component is a plain `*`
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
            at += 1
        elif char == "[":
            at = _bracket(segment, at + 1, out)
        else:
            out.append(re.escape(char))
            at += 1
    return "".join(out)


def _bracket(segment: str, at: int, out: list[str]) -> int:
    """The bracket expression that starts at AT (just past `[`) appended to OUT;
    where the pattern goes on."""
    negated = at < len(segment) and segment[at] in "!^"
    at += negated
    members, first = [], True
    while at < len(segment) and (segment[at] != "]" or first):
        first = False
        if segment.startswith("[:", at):
            end = segment.find(":]", at + 2)
            if end < 0 or segment[at + 2:end] not in _POSIX_CLASSES:
                raise ValueError("unknown character class")
            members.append(_POSIX_CLASSES[segment[at + 2:end]])
            at = end + 2
            continue
        if segment[at] == "\\" and at + 1 < len(segment):
            at += 1
        char = re.escape(segment[at])
        at += 1
        if segment.startswith("-", at) and at + 1 < len(segment) and segment[at + 1] != "]":
            high = segment[at + 1:at + 3] if segment[at + 1] == "\\" else segment[at + 1]
            members.append(f"{char}-{re.escape(high[-1])}")
            at += 1 + len(high)
        else:
            members.append(char)
    if at >= len(segment):
        raise ValueError("unterminated bracket expression")
    out.append(f"[^/{''.join(members)}]" if negated else f"(?!/)[{''.join(members)}]")
    return at + 1


def _ignored(layers: tuple[_Layer, ...], rel: str, is_dir: bool) -> bool:
    # Only the entry itself is matched: its parents were already kept, and an
    # excluded parent was never walked, so its content can't be re-included.
    for layer in reversed(layers):  # deepest ignore file has the last word
        sub = rel[len(layer.prefix) :]
        for rule in layer.rules:
            if (is_dir or not rule.dir_only) and rule.regex.fullmatch(sub):
                return rule.excludes
    return False


# --- digest and archive --------------------------------------------------------


def _record(entry: _Entry, executable: bool, content_sha: bytes) -> bytes:
    # NUL cannot occur in a path and the other fields have a fixed size, so
    # two different trees can never produce the same byte stream.
    return b"%s\0%s\0%d\0%s" % (
        os.fsencode(entry.rel),
        entry.kind.encode(),
        executable,
        content_sha,
    )


def _is_exec(mode: int) -> bool:
    return mode & 0o111 != 0


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _digest(records: list[bytes]) -> str:
    tree = hashlib.sha256(_DIGEST_SALT)
    for record in records:
        tree.update(record)
    return tree.hexdigest()


def _records(entries: list[_Entry]) -> list[bytes]:
    """Each entry's part of the digest, in order (see _record)."""
    records = []
    for e in entries:
        content = hashlib.sha256()
        executable = e.kind == "dir"
        if e.kind == "file":
            with _open_file(e.path) as f:
                executable = _is_exec(os.fstat(f.fileno()).st_mode)
                for chunk in _chunks(f):
                    content.update(chunk)
        elif e.kind == "link":
            content.update(os.fsencode(os.readlink(e.path)))
        records.append(_record(e, executable, content.digest()))
    return records


class _HashingReader:
    """Hashes what tarfile copies, so the archive is checked against the digest."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.sha.update(data)
        return data


# --- sparse files ----------------------------------------------------------------
#
# A file with holes (a preallocated dataset, a checkpoint written at offsets)
# is packed as a sparse member in the PAX format 1.0 of GNU tar: its data
# regions only, after a map of them. GNU and BSD tar (the node's `tar -x`)
# unpack it with its holes, so it stays sparse on the node instead of growing
# to its full size there. Its digest is that of its bytes, holes read as zeros,
# like any file's.

# Less than this much of holes is not worth a sparse member.
SPARSE_MIN_HOLES = 1 << 20
_ZEROS = bytes(_CHUNK)


def _sparse_regions(fd: int, st: os.stat_result) -> list[tuple[int, int]] | None:
    """(offset, length) of each data region of a file with holes worth keeping, else None."""
    if st.st_size - st.st_blocks * 512 < SPARSE_MIN_HOLES:
        return None  # holes cost disk blocks: at most this much can be holes
    regions, offset = [], 0
    try:
        while offset < st.st_size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # only a hole after offset
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), st.st_size)
            regions.append((start, end - start))
            offset = end
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if st.st_size - sum(length for _, length in regions) < SPARSE_MIN_HOLES:
        return None
    if not regions or sum(regions[-1]) < st.st_size:
        regions.append((st.st_size, 0))  # ends in a hole: the map gives the size, as GNU tar's
    return regions


def _sparse_map(regions: list[tuple[int, int]]) -> bytes:
    numbers = [len(regions), *(number for region in regions for number in region)]
    text = "".join(f"{number}\n" for number in numbers).encode()
    return text + bytes(-len(text) % tarfile.BLOCKSIZE)


def _as_sparse_member(info: tarfile.TarInfo, regions: list[tuple[int, int]]) -> None:
    """Turn INFO (a regular file's) into the header of a PAX 1.0 sparse member."""
    folder, _, name = info.name.rpartition("/")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": info.name, "GNU.sparse.realsize": str(info.size)}
    info.name = f"{folder + '/' if folder else ''}GNUSparseFile.0/{name}"
    info.size = len(_sparse_map(regions)) + sum(length for _, length in regions)


class _SparseReader:
    """The data of a sparse member (the map, then each region), hashing the
    file's logical content (holes as zeros) on the way."""

    def __init__(self, f: BinaryIO, regions: list[tuple[int, int]], size: int) -> None:
        self._sha = hashlib.sha256()
        self._parts = self._generate(f, regions, size)
        self._part, self._at = b"", 0

    @property
    def sha(self):
        """The content hash, once tarfile read the member's data (a trailing hole is hashed here)."""
        if any(self._parts):
            raise RuntimeError("a sparse member was not read to its end")
        return self._sha

    def _generate(self, f: BinaryIO, regions: list[tuple[int, int]], size: int) -> Iterator[bytes]:
        yield _sparse_map(regions)
        position = 0
        for offset, length in regions:
            self._hash_zeros(offset - position)
            f.seek(offset)
            left = length
            while left:
                data = f.read(min(left, _CHUNK))
                if not data:
                    raise TreeChanged(f.name)
                self._sha.update(data)
                left -= len(data)
                yield data
            position = offset + length
        self._hash_zeros(size - position)

    def _hash_zeros(self, count: int) -> None:
        while count > 0:
            self._sha.update(_ZEROS[:min(count, len(_ZEROS))])
            count -= len(_ZEROS)

    def read(self, size: int = -1) -> bytes:
        out = []
        while size < 0 or size > 0:
            if self._at == len(self._part):
                self._part, self._at = next(self._parts, b""), 0
                if not self._part:
                    break
            piece = self._part[self._at:self._at + size] if size > 0 else self._part[self._at:]
            self._at += len(piece)
            size -= len(piece) if size > 0 else 0
            out.append(piece)
        return b"".join(out)


def _write_atomically(entries: list[_Entry], records: list[bytes], final: Path) -> None:
    """Write the archive under a temporary name, renamed to FINAL only once
    complete and true to RECORDS; removed on any error or interrupt."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _write_tar(entries, records, out)
            # A truncated archive under its digest name would be reused forever.
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_tar(entries: list[_Entry], records: list[bytes], out: BinaryIO) -> None:
    """Write the archive; raise TreeChanged naming the first entry whose
    content is not what its record in RECORDS (the digest's) says."""
    # mtime=0 and no filename in the gzip header: same tree, same bytes.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for e, record in zip(entries, records, strict=True):
            info = tarfile.TarInfo(e.rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""  # the remote user owns what it unpacks
            content = hashlib.sha256()
            if e.kind == "file":
                with _open_file(e.path) as f:
                    st = os.fstat(f.fileno())
                    executable = _is_exec(st.st_mode)
                    info.size, info.mtime = st.st_size, int(st.st_mtime)
                    info.mode = 0o755 if executable else 0o644
                    regions = _sparse_regions(f.fileno(), st)
                    reader: _HashingReader | _SparseReader
                    if regions is None:
                        reader = _HashingReader(f)
                    else:
                        reader = _SparseReader(f, regions, st.st_size)
                        _as_sparse_member(info, regions)
                    try:
                        tar.addfile(info, reader)  # type: ignore[arg-type]
                    except OSError as error:
                        if isinstance(error, TreeChanged) or error.errno is not None:
                            raise  # not tarfile's "unexpected end of data" (the file shrank)
                        raise TreeChanged(e.path) from error
                    content = reader.sha
            else:
                st = os.lstat(e.path)
                info.mtime = int(st.st_mtime)
                executable = e.kind == "dir"
                if e.kind == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                else:
                    target = os.readlink(e.path)
                    info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, target
                    content.update(os.fsencode(target))
                tar.addfile(info)
            if _record(e, executable, content.digest()) != record:
                raise TreeChanged(e.path)
