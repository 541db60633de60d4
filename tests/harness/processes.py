"""The processes of the sshd nodes, read from /proc: finding a node's processes,
ending them, and sweeping what a harness that died (SIGKILL, a crash) left.

All nodes run as one user on one kernel, so a process is told to a node by
the marker every session of that node carries in its environment
(``TSUBMIT_HARNESS_NODE``, sshd's ``SetEnv``) or by its working directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .accounts import DEFAULT_USER

if TYPE_CHECKING:
    from .sshd import Node

MARKER_ENV = "TSUBMIT_HARNESS_NODE"
BASE_PARENT = "/tmp"
BASE_PREFIX = "tsubmit-nodes-"
# Identity (pid and start time) of the process that owns a temporary base dir.
OWNER_FILE = "owner"


def node_processes(node: Node) -> list[tuple[int, str]]:
    """(pid, command line) of the test user's live processes of NODE: those with the
    node's marker in their environment or running inside its remote root."""
    uid = pwd.getpwnam(node.user).pw_uid
    marker = f"{MARKER_ENV}={node.marker}".encode()
    root = str(node.remote_root)
    found = []
    for pid in pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid or state(pid) == "Z":
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        if marker in environ or cwd == root or cwd.startswith(root + "/"):
            found.append((pid, cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")))
    return found


def sweep_stale_base_dirs(user: str = DEFAULT_USER) -> None:
    """Clean up after harnesses whose test process died without stop() (SIGKILL, crash).

    Their sshds died with them (PR_SET_PDEATHSIG), but jobs started on the
    nodes and the /tmp folder remain; a later run would otherwise see stray
    torchrun processes.  Folders of live processes (other xdist workers) are kept.
    """
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return
    for base in Path(BASE_PARENT).glob(f"{BASE_PREFIX}*"):
        try:
            owner = (base / OWNER_FILE).read_text()
        except OSError:
            continue  # being created, or not ours
        pid = int(owner.split()[0]) if owner.split() else 0
        if pid and process_identity(pid) == owner:
            continue
        prefix = f"{MARKER_ENV}={base}/".encode()
        stale = []
        for proc in pids():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{proc}").st_uid == uid and any(
                    var.startswith(prefix) for var in Path(f"/proc/{proc}/environ").read_bytes().split(b"\0")
                ):
                    stale.append(proc)
                elif comm(proc) == "sshd" and str(base) in Path(f"/proc/{proc}/cmdline").read_text(
                    errors="replace"
                ):
                    stale.append(proc)  # a listener spawned off the main thread
        terminate(stale)
        shutil.rmtree(base, ignore_errors=True)


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def has_listener(address: str, port: int) -> bool:
    """Whether a TCP socket listens on exactly address:port (IPv4, this network namespace)."""
    packed = int.from_bytes(socket.inet_aton(address), sys.byteorder)
    wanted = f"{packed:08X}:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        return any(
            fields[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
            for fields in (line.split() for line in table)
        )


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def end_client_connections(address: str, port: int) -> int:
    """End this machine's processes connected to ADDRESS:PORT (an ssh ControlMaster
    that Ansible or tsubmit keeps open to a node, a held `ssh` session) and remove
    the control sockets they listened on, as a lost node leaves none behind.
    Returns how many processes it ended."""
    packed = int.from_bytes(socket.inet_aton(address), sys.byteorder)
    remote = f"{packed:08X}:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        connected = {fields[9] for fields in (line.split() for line in table) if fields[2] == remote}
    with open("/proc/net/unix") as table:
        next(table)
        unix_paths = {fields[6]: fields[7] for fields in (line.split() for line in table) if len(fields) > 7}
    holders, sockets = [], []
    for pid in pids():
        if pid == os.getpid():
            continue
        inodes = _socket_inodes(pid)
        if inodes & connected:
            holders.append(pid)
            sockets += [unix_paths[inode] for inode in inodes if inode in unix_paths]
    terminate(holders)
    for path in sockets:
        with contextlib.suppress(OSError):
            if Path(path).is_socket():
                Path(path).unlink()
    return len(holders)


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGTERM the child when the test process dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def stat_fields(pid: int) -> list[str]:
    # comm may contain spaces and parentheses; it ends at the last ')'.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def state(pid: int) -> str:
    return stat_fields(pid)[0]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children_map() -> dict[int, list[int]]:
    """Every live process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(int(stat_fields(pid)[1]), []).append(pid)
    return children


def descendants(root: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """ROOT's descendants; pass one children_map() to walk several trees of one moment."""
    children = children_map() if children is None else children
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def process_identity(pid: int) -> str:
    """Return "PID STARTTIME", which unlike the pid alone cannot match a later process."""
    try:
        return f"{pid} {stat_fields(pid)[19]}"
    except (OSError, IndexError):
        return ""


def alive(pid: int) -> bool:
    try:
        return state(pid) != "Z"
    except (OSError, IndexError):
        return False


def terminate(pids: list[int], *, grace: float = 3.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def catches(pid: int, number: int) -> bool:
    """Whether process PID has a handler for signal NUMBER (its SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(r"^SigCgt:\s*(\w+)", status, re.M).group(1), 16)
    return bool(mask >> (number - 1) & 1)


def stderr_reader(process: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    """PROCESS's stderr lines as they arrive, and the thread reading them (ends with the process)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    return lines, reader
