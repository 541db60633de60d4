"""The inventories of tsubmit's own clusters as each job was launched with them.

A cluster written by `tsubmit cluster add` is one file that `cluster edit`
rewrites and `cluster remove` deletes. A job keeps the connection details it
was launched with: its record names a copy of that file ("sources"), kept in
the state dir under its content's hash (one copy per version of a cluster,
however many jobs use it), which `tsubmit gc` removes once no job names it,
and the file itself ("cluster_sources"), which a restart reads again while it
exists. Imported inventories and `-i` paths are the user's own files: they
stay as given.
"""

import hashlib
import os
from pathlib import Path

from ..paths import clusters_dir, ensure_private_dir, state_dir


def folder() -> Path:
    return state_dir() / "inventories"


def launching_from(inventory: dict, sources: list[str]) -> None:
    """Record in a job's INVENTORY that its attempt launches from SOURCES."""
    inventory["sources"] = keep(sources)
    inventory["cluster_sources"] = sources


def next_attempt_sources(inventory: dict) -> list[str]:
    """What a job's next attempt reads: its cluster's files as they are now, or the
    copies it was launched with once one of them is gone (`cluster remove`)."""
    current = inventory.get("cluster_sources")
    return current if current and all(Path(source).exists() for source in current) else inventory["sources"]


def keep(sources: list[str]) -> list[str]:
    """SOURCES with each tsubmit cluster file replaced by its kept copy."""
    return [_kept(Path(source)) if Path(source).parent == clusters_dir() else source
            for source in sources]


def _kept(source: Path) -> str:
    content = source.read_bytes()
    kept = ensure_private_dir(folder()) / f"{hashlib.sha256(content).hexdigest()[:20]}.yml"
    if not kept.exists():
        partial = kept.with_name(f".{kept.name}.{os.getpid()}")
        with open(os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600), "wb") as handle:
            handle.write(content)
        partial.replace(kept)
    return str(kept)
