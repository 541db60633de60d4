"""Where tsubmit keeps its files on the controller.

TSUBMIT_HOME, when set, holds everything (config/ and state/), so tests and
separate setups stay isolated; otherwise the XDG base directories are used.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / fallback


def config_dir() -> Path:
    home = os.environ.get("TSUBMIT_HOME")
    if home:
        return Path(home) / "config"
    return _xdg("XDG_CONFIG_HOME", ".config") / "tsubmit"


def state_dir() -> Path:
    home = os.environ.get("TSUBMIT_HOME")
    if home:
        return Path(home) / "state"
    return _xdg("XDG_STATE_HOME", ".local/state") / "tsubmit"


def clusters_dir() -> Path:
    return config_dir() / "clusters"


def imports_dir() -> Path:
    """Existing inventories registered by `cluster import`, by reference."""
    return config_dir() / "imports"


def ansible_dir() -> Path:
    """The playbooks, roles, inventories and ansible.cfg tsubmit runs.

    An installed wheel carries them inside the package; a source checkout
    (editable install, tests run from the repository) has them at its top.
    """
    packaged = PACKAGE_DIR / "_ansible"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent


def ensure_private_dir(path: Path) -> Path:
    """PATH and every missing folder above it, each 0700: whichever command runs
    first creates the state dir, and the job store in it holds jobs' secrets."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return path
