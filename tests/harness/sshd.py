"""Real sshd nodes on loopback addresses, for tests that need machines to SSH into.

tsubmit ships a working directory to nodes over SSH with Ansible, so its end-to-end
tests run against real ``sshd`` processes rather than mocks: every node is an
``/usr/sbin/sshd -D`` child process listening on its own loopback address
(127.0.S.H, the whole 127.0.0.0/8 is local) with its own host key, so the tests
exercise the same code paths as a real cluster, host key checking included.

The harness is split by job: this module runs the nodes (their sshd config
and processes); clients.py reaches them (ssh commands, Ansible host variables,
inventories); accounts.py makes the light test user, its keys and known_hosts;
processes.py finds and ends the nodes' processes in /proc; unkind.py makes
nodes as unkind as real ones (``stale_python``, ``slow_rc``). Every name the
tests and the bench import is importable from here, as before the split.

Choices that are not obvious:

* Nodes are reached as a dedicated light user (see accounts.py).
* All nodes share this machine's filesystem and user, so each node gets its own
  remote root folder, and every session a node's sshd starts carries the
  environment variable ``TSUBMIT_HARNESS_NODE`` (sshd's ``SetEnv``).  That marker
  is inherited by everything the session starts, which is how
  :meth:`SshNodes.processes_of` tells the processes of ``node1`` from those of
  ``node2`` although they run as the same user on the same kernel.
* The harness runs as root: sshd must switch to the test user, and the harness
  creates that user when it is missing.
* Nodes can be made as unkind as real ones (what issue 16 found): see unkind.py.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import accounts
from . import processes as procs
from .accounts import (  # noqa: F401  (re-exported: the harness's names, importable from here)
    DEFAULT_USER,
    SETUP_SCRIPT,
    SSH_KEYGEN,
    HarnessError,
    check_python,
    ensure_test_user,
    known_hosts_line,
)
from .clients import BASTION_ALIAS, SSH, NodeClients, SshCommandError  # noqa: F401
from .processes import (  # noqa: F401  (re-exported)
    BASE_PARENT,
    BASE_PREFIX,
    MARKER_ENV,
    OWNER_FILE,
    children_map,
    descendants,
    sweep_stale_base_dirs,
)
from .unkind import SESSION_PATH, SFTP_SERVER, SLOW_LOGIN, STALE_SHIM, Unkindness  # noqa: F401
from .waiting import eventually

SSHD = "/usr/sbin/sshd"
# sshd refuses to start without its privilege separation directory, which
# Debian only creates from the systemd unit.
PRIVSEP_DIR = Path("/run/sshd")
READY_TIMEOUT = 20.0
_sshd_version: tuple[int, int] | None = None


@dataclass
class Node:
    """One sshd node.  Its sshd files (config, log, host key) live in ``dir``."""

    name: str
    address: str
    port: int
    user: str
    remote_root: Path
    host_key_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        return self.host_key_file.parent

    @property
    def config_file(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log_file(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def lease_dir(self) -> Path:
        """The node's GPU lease folder inside a folder every user may write, as
        /dev/shm on a real machine; owned by root, mode 1777, as `tsubmit cluster
        check --fix` makes it (an ordinary user's would be refused or not shared)."""
        return self.dir / "shm" / "tsubmit-gpu-leases"

    @property
    def marker(self) -> str:
        """Value of ``TSUBMIT_HARNESS_NODE`` in every session of this node."""
        return str(self.dir)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def xdist_subnet() -> int:
    """0 without xdist, 1 + worker index with it (PYTEST_XDIST_WORKER=gwN), plus
    TSUBMIT_TEST_SUBNET when set.

    Each pytest-xdist worker runs its own session, so each gets its own
    127.0.S.0/24 and the nodes of two workers never share an address.
    """
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    # TSUBMIT_TEST_SUBNET shifts the whole range, so two pytest runs on one machine (two
    # checkouts tested at once) never share an address either.
    return int(os.environ.get("TSUBMIT_TEST_SUBNET", "0")) + (1 + int(match.group(1)) if match else 0)


def node_python() -> str:
    """The Python the nodes run jobs with: TSUBMIT_TEST_NODE_PYTHON when set, else
    this one. The compatibility job (scripts/compat.sh) runs tsubmit on another
    Python, without torch, and its nodes on the main venv's, as a user's
    controller and nodes differ."""
    return os.environ.get("TSUBMIT_TEST_NODE_PYTHON") or sys.executable


class SshNodes(NodeClients):
    """A set of real sshd nodes on loopback addresses (context manager).

    ``SshNodes(3, subnet=1)`` gives node1..node3 on 127.0.1.2..127.0.1.4, port
    2222, each with its own host key and remote root.  ``nodes`` is filled by
    :meth:`start`.  If ``base_dir`` is None the harness works in a fresh
    ``/tmp/tsubmit-nodes-*`` folder and removes it at :meth:`stop`; a given
    ``base_dir`` is left in place (logs stay there for debugging).

    ``extra_config`` lines override the generated sshd_config, e.g.
    ``["KexAlgorithms curve25519-sha256"]`` skips the post-quantum key exchange
    of OpenSSH 9.x, which costs about 70 ms of CPU per connection.

    ``stale_python=True`` puts a broken ``python3.13`` (a stale pyenv shim) first
    on every session's PATH; ``slow_rc=0.3`` makes every session wait 0.3 s
    before its command runs (see the module docstring).
    """

    def __init__(
        self,
        count: int,
        *,
        base_dir: Path | None = None,
        subnet: int = 0,
        first_host: int = 2,
        port: int = 2222,
        user: str = DEFAULT_USER,
        python: str | None = None,
        extra_config: Sequence[str] = (),
        stale_python: bool = False,
        slow_rc: float = 0.0,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if not 0 <= subnet <= 255:
            raise ValueError(f"subnet must be in 0..255, got {subnet}")
        if first_host < 1 or first_host + count - 1 > 254:
            raise ValueError(
                f"hosts {first_host}..{first_host + count - 1} do not fit in 127.0.{subnet}.1-254"
            )
        self.count = count
        self.subnet = subnet
        self.first_host = first_host
        self.port = port
        self.user = user
        self.python = python or node_python()
        self.extra_config = list(extra_config)
        self.stale_python = stale_python
        self.slow_rc = slow_rc
        self._given_base_dir = Path(base_dir) if base_dir is not None else None
        self.base_dir: Path | None = None
        self.nodes: list[Node] = []
        self.known_hosts = Path()
        self.identity_file = Path()
        self.authorized_keys = Path()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SshNodes:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> SshNodes:
        """Create keys, config and remote roots, start every sshd, wait until ssh works."""
        if self._started:
            return self
        accounts.require_root()
        if not Path(SSHD).exists():
            raise HarnessError(
                f"{SSHD} not found: install openssh-server "
                f"(apt-get install -y openssh-server, or run {SETUP_SCRIPT})"
            )
        self._started = True
        try:
            account = ensure_test_user(self.user)
            check_python(self.user, self.python)
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            sweep_stale_base_dirs(self.user)
            self._make_base_dir()
            self._make_client_key()
            self._make_login_environment()
            self.nodes = [self._make_node(i, account) for i in range(self.count)]
            self._write_known_hosts()
            self._check_user_access()
            for node in self.nodes:
                self._spawn(node)
            self._wait_all_ready(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every sshd, its connections and the test user's processes of these nodes."""
        if not self._started:
            return
        self._started = False
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.stop_node(node)
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.kill_processes(node)
        if self._given_base_dir is None and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def stop_node(self, node: Node, *, kill_processes: bool = False) -> None:
        """Kill that node's sshd, open connections included, so it is unreachable.

        Killing only the listening sshd would leave established connections (an
        Ansible ControlPersist master, say) working.  The node's own processes
        keep running, like a network partition, unless ``kill_processes``.
        """
        proc = node.process
        node.process = None
        if proc is not None and proc.poll() is None:
            # Frozen, the listener cannot fork new connections while we list them.
            os.kill(proc.pid, signal.SIGSTOP)
            connections = [pid for pid in descendants(proc.pid) if procs.comm(pid).startswith("sshd")]
            proc.kill()
            proc.wait()
            procs.terminate(connections)
        elif proc is not None:
            proc.wait()
        if kill_processes:
            self.kill_processes(node)

    def lose_node(self, node: Node, *, kill_processes: bool = True) -> None:
        """Lose the node as a crash would: its sshd gone with every connection to it,
        the per-connection sshd children on its side and, on the controller's, the
        ssh ControlMaster processes that held one, with their control sockets; and,
        with ``kill_processes`` (the default), everything it ran, the rank's processes
        included. Without, they run on unseen, as behind a cut cable (a node that
        comes back with its old rank still running). ``start_node`` brings it back.
        """
        self.stop_node(node, kill_processes=kill_processes)
        procs.end_client_connections(node.address, node.port)

    def start_node(self, node: Node) -> None:
        """Start the node's sshd again (same address, port and host key); wait until ssh works.

        Call it from the main thread: the sshd is tied to the spawning thread's
        life (PR_SET_PDEATHSIG) so that it dies with the test process.
        """
        if node.running:
            return
        self._spawn(node)
        self._wait_ready(node)

    def unreachable_address(self) -> tuple[str, int]:
        """An address in the same subnet with nothing listening on ``port``.

        Connecting to it is refused at once (loopback), it does not time out.
        """
        ours = {node.address for node in self.nodes}
        last = self.first_host + self.count - 1
        candidates = [*range(last + 1, 255), *range(self.first_host - 1, 1, -1)]
        for host in candidates:
            address = f"127.0.{self.subnet}.{host}"
            if address not in ours and not procs.listening(address, self.port):
                return address, self.port
        raise HarnessError(f"no free address left in 127.0.{self.subnet}.0/24")

    # ------------------------------------------------------------------ processes

    def processes_of(self, node: Node, pattern: str) -> list[str]:
        """Command lines of the test user's live processes on the node matching ``pattern``.

        ``pattern`` is a Python regex searched in the command line (like
        ``pgrep -f``); dash does not exec the last command of ``sh -c``, so the
        wrapping shell matches too unless the pattern is anchored (``^sleep``).
        A process belongs to the node if it carries the node's
        marker in its environment or runs inside its remote root.  Reading /proc
        directly, unlike ``ssh pgrep -f`` whose own shell would match, also works
        while the node is stopped.
        """
        regex = re.compile(pattern)
        return [cmd for _, cmd in procs.node_processes(node) if regex.search(cmd)]

    def kill_processes(self, node: Node, *, grace: float = 3.0) -> int:
        """SIGTERM then SIGKILL the test user's processes of the node; returns how many."""
        pids = [pid for pid, _ in procs.node_processes(node)]
        procs.terminate(pids, grace=grace)
        return len(pids)

    # ------------------------------------------------------------------ setup

    def _make_base_dir(self) -> None:
        if self._given_base_dir is None:
            # /tmp/pytest-of-root is 0700, so the test user could not reach a
            # pytest tmp_path; mkdtemp's own 0700 is widened for the same reason.
            base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir=BASE_PARENT))
            base.chmod(0o755)
            (base / OWNER_FILE).write_text(procs.process_identity(os.getpid()))
        else:
            base = self._given_base_dir.absolute()
            missing = [p for p in (base, *base.parents) if not p.exists()]
            base.mkdir(parents=True, exist_ok=True)
            for path in missing:
                path.chmod(0o755)
        self.base_dir = base
        for char in "\"'% \t\n":
            if char in str(base):
                raise HarnessError(f"base_dir {base} contains {char!r}, which sshd_config cannot take")

    def _make_client_key(self) -> None:
        assert self.base_dir is not None
        self.identity_file, self.authorized_keys = accounts.make_client_key(self.base_dir, self.user)

    @property
    def unkind(self) -> Unkindness:
        assert self.base_dir is not None
        return Unkindness(self.base_dir, self.stale_python, self.slow_rc)

    @property
    def shim_dir(self) -> Path:
        """The folder first on every session's PATH when ``stale_python``."""
        return self.unkind.shim_dir

    @property
    def login_wrapper(self) -> Path:
        return self.unkind.login_wrapper

    def _make_login_environment(self) -> None:
        self.unkind.write_files()

    def _make_node(self, index: int, account: pwd.struct_passwd) -> Node:
        assert self.base_dir is not None
        name = f"node{index + 1}"
        node_dir = self.base_dir / name
        node_dir.mkdir(mode=0o755)
        node_dir.chmod(0o755)
        remote_root = node_dir / "root"
        remote_root.mkdir()
        os.chown(remote_root, account.pw_uid, account.pw_gid)
        remote_root.chmod(0o755)
        shm = node_dir / "shm"  # the node's /dev/shm (see Node.lease_dir)
        shm.mkdir()
        shm.chmod(0o1777)
        host_key = node_dir / "ssh_host_ed25519_key"
        accounts.keygen(host_key, f"tsubmit-harness-{name}")
        node = Node(
            name=name,
            address=f"127.0.{self.subnet}.{self.first_host + index}",
            port=self.port,
            user=self.user,
            remote_root=remote_root,
            host_key_file=host_key,
        )
        node.lease_dir.mkdir()
        node.lease_dir.chmod(0o1777)
        node.config_file.write_text(self._sshd_config(node))
        return node

    def _sshd_config(self, node: Node) -> str:
        # sshd keeps the first value of a keyword, so extra_config goes first to win.
        lines = [
            *self.extra_config,
            f"ListenAddress {node.address}:{node.port}",
            f"HostKey {node.host_key_file}",
            f"PidFile {node.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {node.user}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # Without PAM sshd checks the shadow entry itself (see ensure_test_user).
            "UsePAM no",
            # Harness files sit in /tmp with loose modes and the wrong owners.
            "StrictModes no",
            # The benchmark opens many parallel connections to 64 nodes.
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "UseDNS no",
            # sshd keeps the first SetEnv line only: every variable goes on it.
            "SetEnv " + " ".join(f"{key}={value}" for key, value in self._session_env(node).items()),
        ]
        lines += self.unkind.sshd_config()
        if sshd_version() >= (9, 8):
            # OpenSSH 9.8+ would block 127.0.0.1 for a while after connections
            # that end before authentication: readiness probes, host key tests.
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def _session_env(self, node: Node) -> dict[str, str]:
        return {MARKER_ENV: node.marker, **self.unkind.session_env()}

    def _write_known_hosts(self) -> None:
        assert self.base_dir is not None
        self.known_hosts = accounts.write_known_hosts(self.base_dir / "known_hosts", self.nodes)

    def _check_user_access(self) -> None:
        """Fail clearly if the test user cannot reach the files sshd reads as that user."""
        accounts.check_user_access(self.user, [str(self.authorized_keys),
                                               *(str(n.remote_root) for n in self.nodes)], self.base_dir)

    # ------------------------------------------------------------------ sshd processes

    def _spawn(self, node: Node) -> None:
        if procs.listening(node.address, node.port):
            raise HarnessError(
                f"{node.address}:{node.port} is already in use: another test session, or a "
                "leftover sshd (pgrep -af tsubmit-nodes-)? Use another subnet/first_host/port."
            )
        with node.log_file.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            # Config errors go to stderr before -E takes over, so both share the log.
            node.process = subprocess.Popen(
                [SSHD, "-D", "-f", str(node.config_file), "-E", str(node.log_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Own session: a Ctrl-C in the terminal must not kill the nodes
                # before the fixtures tear them down.
                start_new_session=True,
                preexec_fn=procs.die_with_parent(os.getpid()) if procs.in_main_thread() else None,
            )

    def _wait_all_ready(self, nodes: list[Node]) -> None:
        with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
            for future in [pool.submit(self._wait_ready, node) for node in nodes]:
                future.result()

    def _wait_ready(self, node: Node) -> None:
        def listening() -> bool:
            if node.process is None or node.process.poll() is not None:
                raise HarnessError(f"sshd of {node.name} exited:\n{procs.tail(node.log_file)}")
            # /proc rather than a probe connection, which sshd would log as an error.
            return procs.has_listener(node.address, node.port)

        eventually(listening, timeout=READY_TIMEOUT, interval=0.02,
                   message=f"sshd of {node.name} listening on {node.address}:{node.port}")
        try:
            self.ssh(node, "true", timeout=READY_TIMEOUT)
        except (SshCommandError, subprocess.TimeoutExpired) as exc:
            raise HarnessError(
                f"sshd of {node.name} listens but `ssh true` fails: {exc}\n"
                f"sshd log:\n{procs.tail(node.log_file)}"
            ) from exc


# ---------------------------------------------------------------------- sshd


def sshd_version() -> tuple[int, int]:
    global _sshd_version
    if _sshd_version is None:
        # sshd has no version flag before 9.x; its usage message carries the version too.
        out = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
        match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
        _sshd_version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    return _sshd_version
