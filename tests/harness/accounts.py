"""The machine side of the sshd nodes: the light test user, its keys and the
nodes' known_hosts, and the checks that say how to fix a machine that is not
set up (scripts/setup-ssh-nodes.sh does it all).

Nodes are reached as a dedicated light user (``tsubmit-test``, shell ``/bin/sh``,
which is dash on Debian and reads no rc file for non-interactive commands).
Root's shell init costs about a second per SSH command, which would make the
tests and the benchmark measure the rc files instead of tsubmit. The harness
runs as root: sshd must switch to the test user, and the harness creates that
user when it is missing.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sshd import Node

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
DEFAULT_USER = "tsubmit-test"
SETUP_SCRIPT = "scripts/setup-ssh-nodes.sh"
_USERADD_LOCK = Path(tempfile.gettempdir()) / ".tsubmit-harness-useradd.lock"

# The check imports torch, which takes seconds; it only depends on (user, python).
_python_checked: set[tuple[str, str]] = set()


class HarnessError(RuntimeError):
    """The machine is not set up for the sshd nodes; the message says how to fix it."""


def ensure_test_user(user: str = DEFAULT_USER) -> pwd.struct_passwd:
    """Create the light test user if missing and make sure sshd accepts it.

    Without PAM, sshd refuses any account whose shadow password starts with
    ``!`` ("account is locked"), which is what useradd leaves; ``*`` means "no
    password" without being locked, and key login works.
    """
    _USERADD_LOCK.touch(mode=0o600, exist_ok=True)
    # Two xdist workers may both find the user missing.
    with _USERADD_LOCK.open("r") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            run([sbin("useradd"), "--system", "--user-group", "--create-home",
                  "--home-dir", f"/var/lib/{user}", "--shell", "/bin/sh", user])  # fmt: skip
            account = pwd.getpwnam(user)
        if shadow_password(user).startswith("!"):
            run([sbin("usermod"), "--password", "*", user])
    return account


def check_python(user: str, python: str) -> None:
    """Fail clearly unless ``user`` can run ``python`` and import torch (as the jobs will)."""
    if (user, python) in _python_checked:
        return
    result = run_as(user, [python, "-c", "import torch"])
    if result.returncode != 0:
        closed = [
            str(p) for p in Path(python).absolute().parents
            if p.exists() and not os.stat(p).st_mode & 0o001
        ]  # fmt: skip
        hint = (
            f" These folders are not traversable by others: {', '.join(closed)};"
            " move the checkout/venv elsewhere or chmod o+x them."
            if closed
            else ""
        )
        raise HarnessError(
            f"user {user} cannot run `{python} -c 'import torch'` "
            f"(exit {result.returncode}).{hint}\n{result.stderr.strip()[-2000:]}"
        )
    _python_checked.add((user, python))


def make_client_key(base_dir: Path, user: str) -> tuple[Path, Path]:
    """The client's key pair in BASE_DIR/client, and BASE_DIR/authorized_keys holding
    its public half: (identity file, authorized_keys)."""
    client = base_dir / "client"
    client.mkdir(mode=0o700)
    identity_file = client / "id_ed25519"
    keygen(identity_file, f"{user}@tsubmit-harness")
    authorized_keys = base_dir / "authorized_keys"
    # sshd reads this file as the test user, hence 0644 (and StrictModes no).
    authorized_keys.write_text(identity_file.with_suffix(".pub").read_text())
    authorized_keys.chmod(0o644)
    return identity_file, authorized_keys


def write_known_hosts(path: Path, nodes: list[Node]) -> Path:
    path.write_text("".join(f"{known_hosts_line(node)}\n" for node in nodes))
    path.chmod(0o644)
    return path


def check_user_access(user: str, paths: list[str], base_dir: Path | None) -> None:
    """Fail clearly if USER cannot reach PATHS, files sshd reads as that user."""
    script = 'for p; do test -r "$p" -a -x "$(dirname "$p")" || echo "$p"; done'
    result = run_as(user, ["/bin/sh", "-c", script, "sh", *paths])
    unreadable = result.stdout.split()
    if result.returncode != 0 or unreadable:
        raise HarnessError(
            f"user {user} cannot reach {unreadable or paths} "
            f"(base_dir {base_dir}: every parent folder must be o+x)\n{result.stderr}"
        )


def known_hosts_line(node: Node) -> str:
    key_type, key = node.host_key_file.with_suffix(".pub").read_text().split()[:2]
    host = node.address if node.port == 22 else f"[{node.address}]:{node.port}"
    return f"{host} {key_type} {key}"


def require_root() -> None:
    if os.geteuid() != 0:
        raise HarnessError(
            "the sshd nodes need root: sshd must switch to the test user, and the harness "
            "creates that user. Run the e2e tests as root (or in the CI container)."
        )


def sbin(name: str) -> str:
    # Root's PATH does not always include the sbin folders (e.g. `su` without `-`).
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or name


def run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{shlex.join(args)} failed ({result.returncode}): {result.stderr}")


def run_as(user: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run as ``user`` with an environment like an ssh session's (no root HOME)."""
    env = {"HOME": pwd.getpwnam(user).pw_dir, "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "USER": user, "LOGNAME": user}  # fmt: skip
    return subprocess.run(
        [sbin("runuser"), "-u", user, "--", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        cwd="/",
        check=False,
    )


def shadow_password(user: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1]
    return ""


def keygen(path: Path, comment: str) -> None:
    run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
