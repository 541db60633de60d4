"""Paths a user names inside a job's workdir (`tsubmit fetch PATH`,
`--sync-dir DIR`), checked one way on the controller before any node is
asked: relative, without `..`, normalised. The nodes check again where links
could lead (roles' and node scripts' realpath checks)."""

import posixpath
from pathlib import PurePosixPath

from ..errors import UsageError


def inside_workdir(paths, label: str, asked: str) -> list[str]:
    """PATHS normalised, repeats dropped, each relative to the workdir and inside
    it; else a UsageError starting with LABEL (who asked: the option) that says
    ASKED (what to give instead, e.g. "a folder relative to the job's workdir")."""
    checked: list[str] = []
    for path in paths or ():
        if not isinstance(path, str) or not path.strip() or any(c in path for c in "\0\n\r"):
            raise UsageError(f"{label} {path!r} is not a path: give {asked}")
        if path.startswith(("/", "~")):
            raise UsageError(f"{label} {path} is absolute; give {asked}")
        if ".." in PurePosixPath(path).parts:
            raise UsageError(f"{label} {path} leaves the job's workdir (it goes through ..); give {asked}")
        normal = posixpath.normpath(path)
        if normal not in checked:
            checked.append(normal)
    return checked
