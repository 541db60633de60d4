from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tsubmit.local import archive
from tsubmit.local.archive import git_commit, included_paths, pack

HAS_GIT = shutil.which("git") is not None


def make(root: Path, files: dict[str, str]) -> Path:
    """Create files (and their folders); a key ending in '/' is an empty folder."""
    for rel, text in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return root


def members(arc: archive.Archive) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(arc.path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(arc: archive.Archive, name: str) -> bytes:
    with tarfile.open(arc.path, "r:gz") as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


# --- ignore rules ----------------------------------------------------------------


def test_negation_reincludes_a_file(tmp_path: Path) -> None:
    make(tmp_path, {".gitignore": "*.txt\n!keep.txt\n", "keep.txt": "", "drop.txt": "", "a.py": ""})
    assert included_paths(tmp_path) == [".gitignore", "a.py", "keep.txt"]


def test_nested_gitignore_is_relative_to_its_folder_and_overrides_parent(tmp_path: Path) -> None:
    make(
        tmp_path,
        {
            ".gitignore": "*.log\n",
            "top.log": "",
            "data/x": "",
            "gen/x": "",
            "sub/.gitignore": "!important.log\ndata/\n/gen\n",
            "sub/important.log": "",
            "sub/other.log": "",
            "sub/data/x": "",
            "sub/deep/data/x": "",
            "sub/gen/x": "",
            "sub/deep/gen/x": "",
        },
    )
    assert included_paths(tmp_path) == [
        ".gitignore",
        "data/",
        "data/x",
        "gen/",
        "gen/x",
        "sub/",
        "sub/.gitignore",
        "sub/deep/",
        "sub/deep/gen/",
        "sub/deep/gen/x",
        "sub/important.log",
    ]


def test_anchored_pattern_only_matches_at_its_level(tmp_path: Path) -> None:
    make(tmp_path / "anchored", {".gitignore": "/build\n", "build/a": "", "src/build/b": ""})
    make(tmp_path / "floating", {".gitignore": "build\n", "build/a": "", "src/build/b": ""})
    assert included_paths(tmp_path / "anchored") == [
        ".gitignore",
        "src/",
        "src/build/",
        "src/build/b",
    ]
    assert included_paths(tmp_path / "floating") == [".gitignore", "src/"]


def test_directory_pattern_spares_a_file_with_that_name(tmp_path: Path) -> None:
    make(tmp_path, {".gitignore": "dir/\n", "dir/inside": "", "sub/dir": "i am a file"})
    assert included_paths(tmp_path) == [".gitignore", "sub/", "sub/dir"]


def test_file_in_excluded_directory_cannot_be_reincluded(tmp_path: Path) -> None:
    make(tmp_path, {".gitignore": "logs/\n!logs/keep.txt\n", "logs/keep.txt": "", "a": ""})
    assert included_paths(tmp_path) == [".gitignore", "a"]


def test_whitelist_idiom_keeps_walking_directories(tmp_path: Path) -> None:
    files = {"a.py": "", "a.txt": "", "src/b.py": "", "src/b.txt": ""}
    make(tmp_path, {".gitignore": "*\n!*/\n!*.py\n", **files})
    assert included_paths(tmp_path) == ["a.py", "src/", "src/b.py"]


def test_double_star_slash_matches_folders_below_not_the_folder_itself(tmp_path: Path) -> None:
    make(tmp_path, {".gitignore": "out/**/\n", "out/top.txt": "", "out/sub/x": ""})
    assert included_paths(tmp_path) == [".gitignore", "out/", "out/top.txt"]


def test_malformed_patterns_are_skipped_like_git_does(tmp_path: Path) -> None:
    make(tmp_path, {".gitignore": "\\\n[z-a]\n!\n*.o\n", "a.o": "", "b.c": ""})
    assert included_paths(tmp_path) == [".gitignore", "b.c"]


def test_tsubmitignore_adds_to_gitignore(tmp_path: Path) -> None:
    make(
        tmp_path,
        {
            ".gitignore": "*.log\n",
            ".tsubmitignore": "data/\n!keep.log\n",
            "a.log": "",
            "keep.log": "",
            "data/big": "",
            "sub/.tsubmitignore": "/only-here\n",
            "sub/only-here": "",
            "sub/b.log": "",
            "sub/c": "",
            "only-here": "",
        },
    )
    assert included_paths(tmp_path) == [
        ".gitignore",
        ".tsubmitignore",
        "keep.log",
        "only-here",
        "sub/",
        "sub/.tsubmitignore",
        "sub/c",
    ]


def test_git_and_pycache_are_always_left_out(tmp_path: Path) -> None:
    make(
        tmp_path,
        {
            ".gitignore": "!__pycache__/\n!.git\n",
            ".git/HEAD": "",
            "__pycache__/a.pyc": "",
            "pkg/__pycache__/b.pyc": "",
            "pkg/mod.py": "",
            "sub/.git": "gitdir: ../.git/modules/sub",
        },
    )
    assert included_paths(tmp_path) == [".gitignore", "pkg/", "pkg/mod.py", "sub/"]


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_agrees_with_git_on_a_tricky_tree(tmp_path: Path) -> None:
    make(
        tmp_path,
        {
            ".gitignore": "*.log\n/build\nfoo\n!foo/\ncache/\n!cache/keep\nsrc/*\n!src/main.py\n",
            "a.log": "",
            "build/x": "",
            "lib/build/y": "",
            "foo/foo": "",
            "foo/bar": "",
            "cache/keep": "",
            "src/main.py": "",
            "src/other.py": "",
            "lib/.gitignore": "!*.log\n*.tmp\n",
            "lib/z.log": "",
            "lib/z.tmp": "",
            "lib/deep/.gitignore": "!z.tmp\n",
            "lib/deep/z.tmp": "",
        },
    )
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = subprocess.run(
        ["git", "-C", str(tmp_path), "ls-files", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = [p for p in included_paths(tmp_path) if not p.endswith("/")]
    assert ours == sorted(out)


TREE = ("a.py", "a.txt", "a.log", "b.c", "src/b.py", "src/b.txt", "src/deep/c.py", "a/c/x", "a/b", "a/x/b",
        "a/x/y/b", "out/top.txt", "out/sub/x", "out/sub/deep/y", "keep/build/z", "build/q", "doc/build/r",
        "x1", "x9", "xa", "[x]", "#hash", "!bang", "sp ace", "trail ", "lib/m.so", "lib/n.SO", "d.tmp/u")


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
@pytest.mark.parametrize("patterns", [
    "*\n!*/\n!*.py\n",                  # the whitelist idiom
    "c/\n!a/\n",                         # a folder's own pattern, an ancestor re-included
    "*/\n!a/\n!a/*/\n",
    "a/**/b\n",
    "**/b\n!a/x/**\n",
    "out/**/\n",
    "out/**\n!out/sub/\n",
    "/build\nbuild/\n!keep/\n",
    "x[0-9]\n[!x]*.py\n\\[x\\]\n",
    "\\#hash\n\\!bang\nsp\\ ace\ntrail\\ \n",
    "lib/*.[sS][oO]\n*.tmp/\n",
    "[[:digit:]]*\nx[[:alpha:]]\n",
    "src/*\n!src/deep/\nsrc/deep/*\n!src/deep/c.py\n",
], ids=lambda patterns: patterns.replace("\n", " | "))
def test_agrees_with_git_pattern_by_pattern(tmp_path: Path, patterns: str) -> None:
    make(tmp_path, {".gitignore": patterns, **dict.fromkeys(TREE, "")})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = subprocess.run(["git", "-C", str(tmp_path), "ls-files", "-z", "--others", "--exclude-standard"],
                         capture_output=True, text=True, check=True).stdout.split("\0")
    ours = [p for p in included_paths(tmp_path) if not p.endswith("/")]
    assert ours == sorted(p for p in out if p)


# --- what the walker touches ----------------------------------------------------------


def test_ignored_big_folder_is_never_entered_nor_read(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make(tmp_path / "tree", {".gitignore": "checkpoints/\n", "train.py": "print()"})
    big = tree / "checkpoints" / "model.pt"
    big.parent.mkdir()
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)

    scanned: list[str] = []
    opened: list[str] = []
    real_scandir, real_open = archive.os.scandir, archive._open_file

    def spy_scandir(path: str) -> object:
        scanned.append(os.fspath(path))
        return real_scandir(path)

    def spy_open(path: str) -> object:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(archive.os, "scandir", spy_scandir)
    monkeypatch.setattr(archive, "_open_file", spy_open)
    arc = pack(tree, tmp_path_factory.mktemp("dest"))

    assert scanned and opened  # the spies did see the walk
    assert str(tree) in scanned and str(tree / "train.py") in opened
    assert not any(p.startswith(str(big.parent)) for p in scanned + opened)
    assert set(members(arc)) == {".gitignore", "train.py"}
    assert arc.size < 4096


# --- archive content ----------------------------------------------------------------


def test_archive_content_is_sorted_relative_and_anonymous(tmp_path: Path) -> None:
    tree = make(tmp_path / "tree", {"b.py": "bee", "a/x.txt": "ex", "empty/": "", "run.sh": "#!/bin/sh\n"})
    (tree / "run.sh").chmod(0o750)
    arc = pack(tree, tmp_path / "dest")

    assert arc.path == tmp_path / "dest" / f"{arc.digest}.tar.gz"
    assert arc.size == arc.path.stat().st_size
    got = members(arc)
    assert list(got) == ["a", "a/x.txt", "b.py", "empty", "run.sh"]
    assert arc.files == len(got) == len(included_paths(tree))
    for m in got.values():
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
    assert got["a"].isdir() and got["empty"].isdir() and got["a"].mode == 0o755
    assert got["b.py"].mode == 0o644 and got["run.sh"].mode == 0o755
    assert read_member(arc, "a/x.txt") == b"ex"
    assert read_member(arc, "b.py") == b"bee"


def test_symlinks_are_stored_as_links_and_never_followed(tmp_path: Path) -> None:
    outside = make(tmp_path / "outside", {"secret.txt": "s", "dir/deep.txt": "d"})
    tree = make(tmp_path / "tree", {"a.txt": "a"})
    (tree / "to_file").symlink_to(outside / "secret.txt")
    (tree / "to_dir").symlink_to(outside / "dir")
    (tree / "relative").symlink_to("a.txt")

    assert included_paths(tree) == ["a.txt", "relative", "to_dir", "to_file"]
    got = members(pack(tree, tmp_path / "dest"))
    assert set(got) == {"a.txt", "relative", "to_dir", "to_file"}
    assert got["to_file"].issym() and got["to_file"].linkname == str(outside / "secret.txt")
    assert got["to_dir"].issym() and got["to_dir"].linkname == str(outside / "dir")
    assert got["relative"].issym() and got["relative"].linkname == "a.txt"


def test_fifo_is_skipped(tmp_path: Path) -> None:
    make(tmp_path, {"a": ""})
    os.mkfifo(tmp_path / "pipe")
    assert included_paths(tmp_path) == ["a"]


def test_dest_dir_inside_the_tree_is_not_packed(tmp_path: Path) -> None:
    make(tmp_path, {"a": "1"})
    first = pack(tmp_path, tmp_path / ".cache")
    second = pack(tmp_path, tmp_path / ".cache")
    assert set(members(first)) == {"a"}
    assert first == second


# --- digest and reuse ----------------------------------------------------------------


def digest_of(root: Path, files: dict[str, str], dest: Path) -> str:
    return pack(make(root, files), dest).digest


def test_digest_ignores_mtimes_and_creation_order(tmp_path: Path) -> None:
    files = {"a.txt": "a", "d/b.txt": "b", "d/c.txt": "c"}
    first = digest_of(tmp_path / "one", files, tmp_path / "dest")
    second = digest_of(tmp_path / "two", dict(reversed(files.items())), tmp_path / "dest")
    for path in (tmp_path / "two").rglob("*"):
        os.utime(path, (1, 1))
    assert first == second == pack(tmp_path / "two", tmp_path / "dest").digest


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "a.txt").write_text("A"),
        lambda root: (root / "a.txt").chmod(0o755),
        lambda root: (root / "a.txt").rename(root / "b.txt"),
        lambda root: (root / "link").unlink() or (root / "link").symlink_to("elsewhere"),
        lambda root: (root / "empty").mkdir(),
    ],
    ids=["content", "exec-bit", "rename", "link-target", "new-empty-dir"],
)
def test_digest_changes_with_content(tmp_path: Path, change) -> None:
    tree = make(tmp_path / "tree", {"a.txt": "a"})
    (tree / "link").symlink_to("a.txt")
    before = pack(tree, tmp_path / "dest").digest
    change(tree)
    assert pack(tree, tmp_path / "dest").digest != before


def test_unchanged_tree_reuses_the_archive_without_rewriting(tmp_path: Path) -> None:
    tree = make(tmp_path / "tree", {"a.txt": "a", "d/b.txt": "b"})
    dest = tmp_path / "dest"
    first = pack(tree, dest)
    st = first.path.stat()
    os.utime(tree / "a.txt", (12345, 12345))
    second = pack(tree, dest)
    st2 = second.path.stat()
    assert second == first
    assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert os.listdir(dest) == [first.path.name]


def test_tree_changing_while_packing_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make(tmp_path / "tree", {"a.txt": "a"})
    real_records = archive._records

    def records_then_write(entries):
        records = real_records(entries)
        (tree / "a.txt").write_text("written meanwhile")
        return records

    monkeypatch.setattr(archive, "_records", records_then_write)
    with pytest.raises(archive.TreeChanged, match=f"^{tree / 'a.txt'} changed while it was packed"):
        pack(tree, tmp_path / "dest")
    assert os.listdir(tmp_path / "dest") == []


# --- errors --------------------------------------------------------------------------


def test_missing_or_non_directory_workdir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        pack(missing, tmp_path / "dest")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="file"):
        included_paths(tmp_path / "file")


def test_unreadable_file_propagates_with_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make(tmp_path / "tree", {"ok": "", "locked": "secret"})
    locked = tree / "locked"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make open() behave as for a user

        def deny(path: str) -> object:
            if path == str(locked):
                raise PermissionError(13, "Permission denied", path)
            return open(path, "rb")

        monkeypatch.setattr(archive, "_open_file", deny)
    with pytest.raises(PermissionError) as err:
        pack(tree, tmp_path / "dest")
    assert err.value.filename == str(locked)


# --- git_commit ----------------------------------------------------------------------


@pytest.mark.skipif(not HAS_GIT, reason="git not installed")
def test_git_commit(tmp_path: Path) -> None:
    repo = make(tmp_path / "repo", {"sub/a.txt": "a"})
    assert git_commit(repo) is None  # not a repository
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert git_commit(repo) is None  # no commits yet
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "x"], check=True, env=env)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_commit(repo / "sub") == head


def test_git_commit_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_commit(tmp_path / "missing") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary to be found
    assert git_commit(tmp_path) is None


# Every node writes .tsubmit/job.json into the unpacked tree (start_rank.sh):
# a tree whose .tsubmit, or .tsubmit/job.json, is not a plain folder and file
# would send that write elsewhere, so it is refused at pack time.
@pytest.mark.parametrize("entry,make_it,what", [
    (".tsubmit", lambda path, outside: path.symlink_to(outside), "a symbolic link"),
    (".tsubmit", lambda path, outside: path.write_text("x"), "a file"),
    (".tsubmit/job.json", lambda path, outside: path.symlink_to(outside / "x"), "a symbolic link"),
    (".tsubmit/job.json", lambda path, outside: path.mkdir(), "a folder"),
])
def test_a_tsubmit_entry_that_would_write_outside_the_tree_is_refused(tmp_path: Path, entry, make_it,
                                                                      what) -> None:
    root = make(tmp_path / "w", {"train.py": "x"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / ".tsubmit").mkdir(exist_ok=entry != ".tsubmit")
    if entry == ".tsubmit":
        (root / ".tsubmit").rmdir()
    make_it(root / entry, outside)
    with pytest.raises(archive.UnsafeTree, match=f"{root / entry} is {what}.*.tsubmitignore"):
        pack(root, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []


def test_a_plain_or_ignored_tsubmit_entry_is_packed_as_usual(tmp_path: Path) -> None:
    root = make(tmp_path / "w", {"train.py": "x", ".tsubmit/notes.txt": "mine", ".tsubmit/job.json": "{}"})
    assert {".tsubmit/", ".tsubmit/job.json", ".tsubmit/notes.txt"} <= set(included_paths(root))
    pack(root, tmp_path / "dest")
    other = make(tmp_path / "o", {"train.py": "x", ".tsubmitignore": ".tsubmit\n"})
    (other / ".tsubmit").symlink_to(tmp_path)
    assert ".tsubmit" not in included_paths(other)
    pack(other, tmp_path / "dest")


# --- sparse files ---------------------------------------------------------------------


def sparse_file(path: Path, size: int = 64 << 20) -> Path:
    """A file with a little data at its start and its middle, and holes around it."""
    with open(path, "wb") as f:
        f.write(b"head")
        f.seek(size // 2)
        f.write(b"middle")
        f.truncate(size)
    if os.stat(path).st_blocks * 512 > 1 << 20:
        pytest.skip("this filesystem does not keep holes")
    return path


def test_a_sparse_file_stays_sparse_where_tar_unpacks_it(tmp_path: Path) -> None:
    root = make(tmp_path / "w", {"train.py": "x"})
    sparse_file(root / "data.bin")
    with open(root / "ends_in_a_hole.bin", "wb") as f:
        f.write(b"x")
        f.truncate(8 << 20)
    arc = pack(root, tmp_path / "dest")
    assert arc.size < 64 * 1024
    out = tmp_path / "node"
    out.mkdir()
    # as start_rank.sh unpacks it on a node
    subprocess.run(["tar", "-xzf", str(arc.path), "-C", str(out), "--no-same-owner"], check=True)
    for name in ("data.bin", "ends_in_a_hole.bin"):
        assert (out / name).read_bytes() == (root / name).read_bytes()
        assert os.stat(out / name).st_blocks * 512 < 1 << 20, name
    assert sorted(p.name for p in out.iterdir()) == ["data.bin", "ends_in_a_hole.bin", "train.py"]
    assert read_member(arc, "data.bin") == (root / "data.bin").read_bytes()  # Python's tarfile too


def test_a_sparse_file_has_the_digest_of_its_bytes(tmp_path: Path) -> None:
    sparse = make(tmp_path / "a", {"train.py": "x"})
    sparse_file(sparse / "data.bin")
    full = make(tmp_path / "b", {"train.py": "x"})
    (full / "data.bin").write_bytes((sparse / "data.bin").read_bytes())
    assert pack(sparse, tmp_path / "d1").digest == pack(full, tmp_path / "d2").digest


def test_a_sparse_file_that_changes_while_packed_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    root = make(tmp_path / "w", {"train.py": "x"})
    data = sparse_file(root / "data.bin")
    real_regions = archive._sparse_regions

    def regions_then_write(fd, st):
        found = real_regions(fd, st)
        with open(data, "r+b") as f:
            f.write(b"HEAD")  # into a data region, after the digest was taken
        return found

    monkeypatch.setattr(archive, "_sparse_regions", regions_then_write)
    with pytest.raises(archive.TreeChanged, match=f"^{data} changed while it was packed"):
        pack(root, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []
