"""Getting at a job's nodes: `tsubmit shell` and `tsubmit forward`, and what
`tsubmit fetch` (fetch_files.py) shares with them.

These verbs talk to a node over ssh themselves (tsubmit/ssh.py builds every
ssh command), because Ansible cannot hold an interactive session or a port
forward. What runs on the node is a small POSIX sh script of
tsubmit/node_scripts/, handed to `sh -c` with every value as a positional
argument, so nothing a user typed is parsed by a shell. The job's files on a
node are found by the layout of tsubmit/layout.py, whose paths the scripts
receive as arguments; the nodes are asked, whatever the local record says.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import layout, ssh
from .errors import LaunchError, UsageError
from .job import Job, Rank
from .ssh_hints import host_key_hint

SCRIPTS = Path(__file__).resolve().parent / "node_scripts"
# How long a forward may take to listen on its local port.
FORWARD_TIMEOUT = 30.0


def node_script(name: str) -> str:
    return (SCRIPTS / name).read_text()


@dataclass(frozen=True)
class Place:
    """Where one rank of a job lives: its node's connection and remote root."""

    job: Job
    rank: Rank
    conn: ssh.Connection
    root: str  # tsubmit_remote_root, as the inventory gives it (may start with ~)

    @property
    def where(self) -> str:
        """`node1 (rank 1 of job 3f2a...)`, for messages."""
        return f"{self.rank.host} (rank {self.rank.rank} of job {self.job.id})"


def select_ranks(job: Job, rank_number: int | None, all_ranks: bool = False) -> list[Rank]:
    """--rank R (default 0) or --all; a rank the job does not have is an error naming its ranks."""
    if all_ranks and rank_number is not None:
        raise UsageError("give --rank R or --all, not both")
    if all_ranks:
        return list(job.ranks)
    number = rank_number or 0
    if not 0 <= number < len(job.ranks):
        raise UsageError(f"--rank {number} is out of range: job {job.id} has ranks 0 to {len(job.ranks) - 1}")
    return [job.ranks[number]]


def places(job: Job, ranks: list[Rank]) -> list[Place]:
    """Each rank's node, read from the job's inventory now (vault file included), so a
    changed address or bastion in the inventory is followed."""
    from .clusters import host_variables

    host_vars = host_variables(job.inventory["sources"], sorted({rank.host for rank in ranks}),
                               job.inventory.get("vault_password_file"))
    found = []
    for rank in ranks:
        variables = host_vars[rank.host]
        root = ssh.rendered(rank.host, variables, ["tsubmit_remote_root"]).get("tsubmit_remote_root")
        found.append(Place(job, rank, ssh.connection(rank.host, variables),
                           str(root or layout.DEFAULT_ROOT)))
    return found


def ssh_failure(place: Place, argv: list[str], stderr: str) -> LaunchError:
    """The error for an ssh that could not connect (exit 255), naming the host."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("@")]
    message = host_key_hint(stderr, argv) or (lines[-1] if lines else "ssh failed")
    return LaunchError(f"cannot reach {place.where}; check it "
                       "with `tsubmit cluster check`", {place.rank.host: message})


# --------------------------------------------------------------------------- shell


def shell(place: Place, command: list[str]) -> int:
    """An ssh session on the rank's node, in the job's workdir with the rank's environment:
    COMMAND's exit code, or the interactive shell's. On a terminal the node gets one
    (ssh -t), so editors, pagers and Ctrl-C work there."""
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    job, rank = place.job, place.rank
    argv = ssh.command_argv(place.conn, node_script("shell.sh"),
                            [place.root, layout.workdir(job.id),
                             layout.attempt_file(job.id, rank.rank, job.attempt, layout.ENVIRONMENT),
                             job.id, str(rank.rank), rank.host, *command],
                            tty=terminal)
    # stdin and stdout are the user's; stderr passes through a copy kept to
    # explain an ssh that could not connect.
    process = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert process.stderr is not None
    kept: list[bytes] = []

    def copy() -> None:
        for line in iter(process.stderr.readline, b""):
            kept.append(line)
            del kept[:-20]
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    try:
        code = process.wait()
    except KeyboardInterrupt:
        _end(process)
        raise
    copier.join(timeout=5)
    if code == ssh.SSH_FAILED and not place.conn.local:
        raise ssh_failure(place, argv, b"".join(kept).decode(errors="replace"))
    return code


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- forward


def check_port(port: int, option: str) -> int:
    if not 0 < port < 65536:
        raise UsageError(f"{option} must be a TCP port between 1 and 65535, got {port}")
    return port


def local_port_free(port: int) -> bool:
    """Whether 127.0.0.1:PORT can be listened on here. SO_REUSEADDR, as ssh sets it,
    so a port that only has closed connections waiting (TIME_WAIT) counts as free."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _hex_address(text: str) -> str:
    """An address as /proc/net/tcp* writes it, readable."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return text
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    if len(raw) == 16:  # four 32-bit words, each in the kernel's byte order
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, words)
    return text


def remote_listener(place: Place, port: int) -> None:
    """Fail, naming the host, unless something listens on the node's 127.0.0.1:PORT."""
    argv = ssh.command_argv(place.conn, node_script("listening.sh"), [str(port)], tty=False)
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                errors="replace", timeout=120)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"cannot tell whether port {port} listens on {place.where}",
                          {place.rank.host: "no answer within 120 s"}) from None
    if result.returncode == ssh.SSH_FAILED and not place.conn.local:
        raise ssh_failure(place, argv, result.stderr)
    answer = result.stdout.strip().split()
    if result.returncode != 0 or not answer:
        raise LaunchError(f"cannot tell whether port {port} listens on {place.rank.host}",
                          {place.rank.host: (result.stderr.strip().splitlines() or ["no answer"])[-1]})
    where = place.where
    if answer[0] == "none":
        raise UsageError(f"nothing listens on port {port} on {where}: start the server first (bound to "
                         "127.0.0.1 or 0.0.0.0), or check the port")
    if answer[0] == "other":
        addresses = ", ".join(sorted({_hex_address(text) for text in answer[1:]}))
        raise UsageError(f"port {port} on {where} listens on {addresses} only, which a forward to "
                         "127.0.0.1 does not reach: bind the server to 127.0.0.1 or 0.0.0.0")


def _listening_here(port: int) -> bool:
    """Whether something listens on 127.0.0.1:PORT here, read from /proc without
    connecting (a connection would reach the node's server through the forward)."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    return any(fields[1] in wanted and fields[3] == "0A"
               for fields in (line.split() for line in table.splitlines()[1:]) if len(fields) > 3)


def forward(place: Place, port: int, local_port: int | None, ready: Callable[[str, int], None]) -> None:
    """Forward 127.0.0.1:LOCAL_PORT here to 127.0.0.1:PORT on the rank's node until
    interrupted (Ctrl-C or SIGTERM raise KeyboardInterrupt, interrupts.py; the ssh is ended first).
    READY(url, local port) is called once the local port listens. LOCAL_PORT
    defaults to PORT when that is free here, else to a free port."""
    check_port(port, "PORT")
    if local_port is not None:
        check_port(local_port, "--local-port")
    remote_listener(place, port)
    if place.conn.local:
        # The rank runs on this machine: its port is here already.
        if local_port not in (None, port):
            raise UsageError(f"{place.where} runs on this machine "
                             f"(ansible_connection=local): its port {port} is reachable as it is; "
                             "leave out --local-port")
        ready(f"http://127.0.0.1:{port}/", port)
        while True:
            time.sleep(3600)
    if local_port is None:
        local_port = port if local_port_free(port) else free_local_port()
    elif not local_port_free(local_port):
        raise UsageError(f"local port {local_port} is already in use on this machine: choose another "
                         "with --local-port, or leave it out for a free one")
    argv = ssh.forward_argv(place.conn, local_port, port)
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        _wait_listening(place, process, argv, local_port)
        ready(f"http://127.0.0.1:{local_port}/", local_port)
        process.wait()
        raise _forward_ended(place, process, argv, "the forward ended")
    finally:
        _end(process)


def _wait_listening(place: Place, process: subprocess.Popen, argv: list[str], local_port: int) -> None:
    deadline = time.monotonic() + FORWARD_TIMEOUT
    while not _listening_here(local_port):
        if process.poll() is not None:
            raise _forward_ended(place, process, argv, "cannot forward")
        if time.monotonic() > deadline:
            raise LaunchError(f"cannot forward from {place.rank.host}: the local port {local_port} did not "
                              f"listen within {FORWARD_TIMEOUT:g}s", {place.rank.host: "no answer"})
        time.sleep(0.05)


def _forward_ended(place: Place, process: subprocess.Popen, argv: list[str], what: str) -> Exception:
    stderr = process.stderr.read() if process.stderr else ""
    if "Address already in use" in stderr or "cannot listen to port" in stderr:
        return UsageError(f"{what}: the local port is already in use on this machine; choose another "
                          "with --local-port")
    if process.returncode == ssh.SSH_FAILED:
        return ssh_failure(place, argv, stderr)
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return LaunchError(f"{what} from {place.where}",
                       {place.rank.host: lines[-1] if lines else f"ssh exited with {process.returncode}"})
