"""A job's setup (`--setup CMD`): what it is, and the cache key that names it.

The setup runs on every node before the rank starts (roles/launch/files/
run_setup.sh, from start_rank.sh), once per node and inputs: its folder on
the node, TSUBMIT_SETUP_DIR, is `<remote root>/.setup/<key>` (layout.setup_dir), and a setup
that succeeded there is skipped the next time. The key is computed here, on
the controller, from the setup string and the content of the key files, and
reaches the node as data: the node never hashes or parses the job's files.
"""

import hashlib
from pathlib import Path

from ..errors import UsageError

# Files whose content a setup usually installs from; the key follows them
# unless the job names its own (--setup-key).
DEFAULT_KEY_FILES = ("requirements*.txt", "pyproject.toml", "uv.lock", "environment.yml", "setup.py")
# Hex digits of the key kept in the folder's name: 80 bits, and a short path
# keeps a venv's `#!` lines under the kernel's limit.
KEY_LENGTH = 20


def default_key_files(workdir: Path) -> list[str]:
    """Which of DEFAULT_KEY_FILES the workdir's root holds, sorted."""
    found = {path.name for pattern in DEFAULT_KEY_FILES for path in workdir.glob(pattern) if path.is_file()}
    return sorted(found)


def settings(command: str | None, key_files: list[str] | None, workdir: Path) -> dict | None:
    """The job's setup as the nodes get it, {command, key, key_files}, or None.

    KEY_FILES are relative to the workdir (or absolute); None means the
    defaults the workdir's root holds. A missing or unreadable one is bad
    input, named."""
    if command is None:
        if key_files:
            raise UsageError("--setup-key names the files a setup's cache follows: it goes with --setup")
        return None
    if not command.strip():
        raise UsageError("--setup is empty: give the command to run on every node, e.g. "
                         "--setup 'pip install -r requirements.txt'")
    if "\x00" in command:
        raise UsageError("--setup contains a NUL byte")
    names = default_key_files(workdir) if key_files is None else list(dict.fromkeys(key_files))
    digest = hashlib.sha256(b"tsubmit setup 1\0" + command.encode() + b"\0")
    for name in names:
        path = workdir / name
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"--setup-key {name}: no such file in {workdir}") from None
        except IsADirectoryError:
            raise UsageError(f"--setup-key {name}: {path} is a folder; name the files in it") from None
        except OSError as error:
            raise UsageError(f"--setup-key {name}: cannot read {path}: {error.strerror}") from None
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return {"command": command, "key": digest.hexdigest()[:KEY_LENGTH], "key_files": names}
