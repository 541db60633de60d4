"""Real sshd nodes on loopback addresses, for tests that need machines to SSH into.

tsubmit ships a working directory to nodes over SSH with Ansible, so its end-to-end
tests run against real ``sshd`` processes rather than mocks: every node is an
``/usr/sbin/sshd -D`` child process listening on its own loopback address
(127.0.S.H, the whole 127.0.0.0/8 is local) with its own host key, so the tests
exercise the same code paths as a real cluster, host key checking included.

Choices that are not obvious:

* Nodes are reached as a dedicated light user (``tsubmit-test``, shell ``/bin/sh``,
  which is dash on Debian and reads no rc file for non-interactive commands).
  Root's shell init costs about a second per SSH command, which would make the
  tests and the benchmark measure the rc files instead of tsubmit.
* All nodes share this machine's filesystem and user, so each node gets its own
  remote root folder, and every session a node's sshd starts carries the
  environment variable ``TSUBMIT_HARNESS_NODE`` (sshd's ``SetEnv``).  That marker
  is inherited by everything the session starts, which is how
  :meth:`SshNodes.processes_of` tells the processes of ``node1`` from those of
  ``node2`` although they run as the same user on the same kernel.
* The harness runs as root: sshd must switch to the test user, and the harness
  creates that user when it is missing.
* Nodes can be made as unkind as real ones (what issue 16 found): ``stale_python``
  puts a folder holding a stale pyenv-like ``python3.13`` shim first on every
  session's PATH (sshd's ``SetEnv``), which is what Ansible's interpreter
  discovery picks first; ``slow_rc`` makes every session pay a login script's
  delay first (sshd's ``ForceCommand`` runs a wrapper that sleeps, then the
  command), as a shell running pyenv or conda init does.  Every node runs as
  one user with one home, so these live in the nodes' sshd_config, never in
  the shared home.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
DEFAULT_USER = "tsubmit-test"
MARKER_ENV = "TSUBMIT_HARNESS_NODE"
BASTION_ALIAS = "tsubmit-bastion"
SETUP_SCRIPT = "scripts/setup-ssh-nodes.sh"
# sshd refuses to start without its privilege separation directory, which
# Debian only creates from the systemd unit.
PRIVSEP_DIR = Path("/run/sshd")
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# The PATH sshd gives a session on Debian; the stale shim folder goes before it.
SESSION_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
# What a pyenv shim prints for a version the user no longer has (pyenv's own words).
STALE_SHIM = r"""#!/bin/sh
# A stale pyenv shim: pyenv made it for a Python that is no longer installed.
program="${0##*/}"
cat >&2 <<EOF
pyenv: $program: command not found

The \`$program' command exists in these Python versions:
  3.13.0

Note: See 'pyenv help global' for tips on allowing multiple
      Python versions to be found at the same time.
EOF
exit 127
"""
# sshd runs ForceCommand through the user's shell with the client's command in
# SSH_ORIGINAL_COMMAND; the wrapper sleeps like a heavy rc file, then runs it
# (sftp included, which ForceCommand would otherwise replace).
SLOW_LOGIN = """#!/bin/sh
# A login environment that costs time on every session (pyenv/conda init).
sleep {delay}
case "$SSH_ORIGINAL_COMMAND" in
  "") exec /bin/sh -l ;;
  internal-sftp|sftp|*sftp-server) exec {sftp} ;;
  *) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
"""
READY_TIMEOUT = 20.0
BASE_PARENT = "/tmp"
BASE_PREFIX = "tsubmit-nodes-"
# Identity (pid and start time) of the process that owns a temporary base dir.
OWNER_FILE = "owner"
_USERADD_LOCK = Path(tempfile.gettempdir()) / ".tsubmit-harness-useradd.lock"

# The check imports torch, which takes seconds; it only depends on (user, python).
_python_checked: set[tuple[str, str]] = set()
_sshd_version: tuple[int, int] | None = None


class HarnessError(RuntimeError):
    """The machine is not set up for the sshd nodes; the message says how to fix it."""


class SshCommandError(subprocess.CalledProcessError):
    """A command run over ssh failed; unlike CalledProcessError, str() shows its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, value in (("stdout", self.stdout), ("stderr", self.stderr)):
            if value:
                text += f"\n--- {label} ---\n{value[-4000:].rstrip()}"
        return text


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
    def marker(self) -> str:
        """Value of ``TSUBMIT_HARNESS_NODE`` in every session of this node."""
        return str(self.dir)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def xdist_subnet() -> int:
    """0 without xdist, 1 + worker index with it (PYTEST_XDIST_WORKER=gwN).

    Each pytest-xdist worker runs its own session, so each gets its own
    127.0.S.0/24 and the nodes of two workers never share an address.
    """
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return 1 + int(match.group(1)) if match else 0


class SshNodes:
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
        python: str = sys.executable,
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
        self.python = python
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
        _require_root()
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
            connections = [pid for pid in descendants(proc.pid) if _comm(pid).startswith("sshd")]
            proc.kill()
            proc.wait()
            _terminate(connections)
        elif proc is not None:
            proc.wait()
        if kill_processes:
            self.kill_processes(node)

    def start_node(self, node: Node) -> None:
        """Start the node's sshd again (same address, port and host key); wait until ssh works.

        Call it from the main thread: the sshd is tied to the spawning thread's
        life (PR_SET_PDEATHSIG) so that it dies with the test process.
        """
        if node.running:
            return
        self._spawn(node)
        self._wait_ready(node)

    # ------------------------------------------------------------------ clients

    def ssh_args(self, node: Node, *, known_hosts: Path | None = None) -> list[str]:
        """argv of an ssh client for the node; append the remote command.

        ``-F /dev/null`` keeps the machine's ssh_config (HashKnownHosts, SendEnv,
        GSSAPI) out of the harness's own calls.
        """
        return [
            SSH,
            "-F", "/dev/null",
            "-p", str(node.port),
            "-l", node.user,
            "-i", str(self.identity_file),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR",
            "--",
            node.address,
        ]  # fmt: skip

    def ssh(
        self,
        node: Node,
        command: str,
        *,
        check: bool = True,
        timeout: float = 30,
        known_hosts: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the node over real ssh as the test user, text output captured."""
        args = [*self.ssh_args(node, known_hosts=known_hosts), command]
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise SshCommandError(result.returncode, args, result.stdout, result.stderr)
        return result

    def host_vars(self, node: Node, *, bastion: Node | None = None,
                  interpreter: bool = True) -> dict[str, str]:
        """Ansible host variables to reach the node (see module docstring for the marker).

        ``bastion``: reach it through that node with ``ProxyJump`` (see
        :meth:`client_config`).  ``interpreter=False`` leaves out
        ``ansible_python_interpreter``, as an ops team's inventory does, so
        Ansible would discover one on the node.
        """
        common = (f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                  "-o IdentitiesOnly=yes")
        if bastion is not None:
            common = f"-F {self.client_config(bastion)} -o ProxyJump={BASTION_ALIAS} {common}"
        host_vars = {
            "ansible_host": node.address,
            "ansible_port": str(node.port),
            "ansible_user": node.user,
            "ansible_ssh_private_key_file": str(self.identity_file),
            # IdentitiesOnly: keys from a developer's ssh-agent would be offered
            # first and could hit sshd's MaxAuthTries.
            "ansible_ssh_common_args": common,
            "ansible_python_interpreter": self.python,
            "tsubmit_python": self.python,
            "tsubmit_remote_root": str(node.remote_root),
        }
        if not interpreter:
            del host_vars["ansible_python_interpreter"]
        return host_vars

    def client_config(self, bastion: Node) -> Path:
        """An ssh_config naming BASTION ``tsubmit-bastion``, for ``-o ProxyJump=tsubmit-bastion``.

        ssh gives the jump connection only its config file (``-F``), none of the
        command line's ``-o`` options, so the bastion's key, user and known_hosts
        must be in a file.
        """
        assert self.base_dir is not None
        path = self.base_dir / f"ssh_config-{bastion.name}"
        path.write_text(
            f"Host {BASTION_ALIAS}\n"
            f"  HostName {bastion.address}\n  Port {bastion.port}\n  User {bastion.user}\n"
            f"  IdentityFile {self.identity_file}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
        )
        path.chmod(0o644)
        return path

    def inventory(self, group: str | None = None) -> dict[str, Any]:
        """A YAML-inventory shaped dict with every node (in ``group`` if given)."""
        hosts = {node.name: self.host_vars(node) for node in self.nodes}
        if group is None:
            return {"all": {"hosts": hosts}}
        return {"all": {"children": {group: {"hosts": hosts}}}}

    def write_inventory(self, path: Path, group: str | None = None) -> Path:
        import yaml

        path.write_text(yaml.safe_dump(self.inventory(group), sort_keys=False))
        return path

    def unreachable_address(self) -> tuple[str, int]:
        """An address in the same subnet with nothing listening on ``port``.

        Connecting to it is refused at once (loopback), it does not time out.
        """
        ours = {node.address for node in self.nodes}
        last = self.first_host + self.count - 1
        candidates = [*range(last + 1, 255), *range(self.first_host - 1, 1, -1)]
        for host in candidates:
            address = f"127.0.{self.subnet}.{host}"
            if address not in ours and not _listening(address, self.port):
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
        return [cmd for _, cmd in self._node_processes(node) if regex.search(cmd)]

    def kill_processes(self, node: Node, *, grace: float = 3.0) -> int:
        """SIGTERM then SIGKILL the test user's processes of the node; returns how many."""
        pids = [pid for pid, _ in self._node_processes(node)]
        _terminate(pids, grace=grace)
        return len(pids)

    def _node_processes(self, node: Node) -> list[tuple[int, str]]:
        uid = pwd.getpwnam(node.user).pw_uid
        marker = f"{MARKER_ENV}={node.marker}".encode()
        root = str(node.remote_root)
        found = []
        for pid in _pids():
            try:
                if os.stat(f"/proc/{pid}").st_uid != uid or _state(pid) == "Z":
                    continue
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cwd = os.readlink(f"/proc/{pid}/cwd")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # exited meanwhile
            if marker in environ or cwd == root or cwd.startswith(root + "/"):
                found.append((pid, cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")))
        return found

    # ------------------------------------------------------------------ setup

    def _make_base_dir(self) -> None:
        if self._given_base_dir is None:
            # /tmp/pytest-of-root is 0700, so the test user could not reach a
            # pytest tmp_path; mkdtemp's own 0700 is widened for the same reason.
            base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir=BASE_PARENT))
            base.chmod(0o755)
            (base / OWNER_FILE).write_text(_process_identity(os.getpid()))
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
        client = self.base_dir / "client"
        client.mkdir(mode=0o700)
        self.identity_file = client / "id_ed25519"
        _keygen(self.identity_file, f"{self.user}@tsubmit-harness")
        self.authorized_keys = self.base_dir / "authorized_keys"
        # sshd reads this file as the test user, hence 0644 (and StrictModes no).
        self.authorized_keys.write_text(self.identity_file.with_suffix(".pub").read_text())
        self.authorized_keys.chmod(0o644)

    @property
    def shim_dir(self) -> Path:
        """The folder first on every session's PATH when ``stale_python``."""
        assert self.base_dir is not None
        return self.base_dir / "shims"

    @property
    def login_wrapper(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "slow-login.sh"

    def _make_login_environment(self) -> None:
        if self.stale_python:
            self.shim_dir.mkdir(mode=0o755)
            shim = self.shim_dir / "python3.13"
            shim.write_text(STALE_SHIM)
            shim.chmod(0o755)
        if self.slow_rc:
            self.login_wrapper.write_text(SLOW_LOGIN.format(delay=self.slow_rc, sftp=SFTP_SERVER))
            self.login_wrapper.chmod(0o755)

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
        host_key = node_dir / "ssh_host_ed25519_key"
        _keygen(host_key, f"tsubmit-harness-{name}")
        node = Node(
            name=name,
            address=f"127.0.{self.subnet}.{self.first_host + index}",
            port=self.port,
            user=self.user,
            remote_root=remote_root,
            host_key_file=host_key,
        )
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
        if self.slow_rc:
            lines.append(f"ForceCommand {self.login_wrapper}")
        if sshd_version() >= (9, 8):
            # OpenSSH 9.8+ would block 127.0.0.1 for a while after connections
            # that end before authentication: readiness probes, host key tests.
            lines.append("PerSourcePenalties no")
        return "\n".join(lines) + "\n"

    def _session_env(self, node: Node) -> dict[str, str]:
        env = {MARKER_ENV: node.marker}
        if self.stale_python:
            env["PATH"] = f"{self.shim_dir}:{SESSION_PATH}"
        return env

    def _write_known_hosts(self) -> None:
        assert self.base_dir is not None
        self.known_hosts = self.base_dir / "known_hosts"
        self.known_hosts.write_text("".join(f"{known_hosts_line(node)}\n" for node in self.nodes))
        self.known_hosts.chmod(0o644)

    def _check_user_access(self) -> None:
        """Fail clearly if the test user cannot reach the files sshd reads as that user."""
        paths = [str(self.authorized_keys), *(str(n.remote_root) for n in self.nodes)]
        script = 'for p; do test -r "$p" -a -x "$(dirname "$p")" || echo "$p"; done'
        result = _run_as(self.user, ["/bin/sh", "-c", script, "sh", *paths])
        unreadable = result.stdout.split()
        if result.returncode != 0 or unreadable:
            raise HarnessError(
                f"user {self.user} cannot reach {unreadable or paths} "
                f"(base_dir {self.base_dir}: every parent folder must be o+x)\n{result.stderr}"
            )

    # ------------------------------------------------------------------ sshd processes

    def _spawn(self, node: Node) -> None:
        if _listening(node.address, node.port):
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
                preexec_fn=_die_with_parent(os.getpid()) if _in_main_thread() else None,
            )

    def _wait_all_ready(self, nodes: list[Node]) -> None:
        with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
            for future in [pool.submit(self._wait_ready, node) for node in nodes]:
                future.result()

    def _wait_ready(self, node: Node) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        # /proc rather than a probe connection, which sshd would log as an error.
        while not _has_listener(node.address, node.port):
            if node.process is None or node.process.poll() is not None:
                raise HarnessError(f"sshd of {node.name} exited:\n{_tail(node.log_file)}")
            if time.monotonic() > deadline:
                raise HarnessError(f"sshd of {node.name} not listening after {READY_TIMEOUT}s")
            time.sleep(0.02)
        try:
            self.ssh(node, "true", timeout=READY_TIMEOUT)
        except (SshCommandError, subprocess.TimeoutExpired) as exc:
            raise HarnessError(
                f"sshd of {node.name} listens but `ssh true` fails: {exc}\nsshd log:\n{_tail(node.log_file)}"
            ) from exc


# ---------------------------------------------------------------------- machine setup


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
            _run([_sbin("useradd"), "--system", "--user-group", "--create-home",
                  "--home-dir", f"/var/lib/{user}", "--shell", "/bin/sh", user])  # fmt: skip
            account = pwd.getpwnam(user)
        if _shadow_password(user).startswith("!"):
            _run([_sbin("usermod"), "--password", "*", user])
    return account


def check_python(user: str, python: str) -> None:
    """Fail clearly unless ``user`` can run ``python`` and import torch (as the jobs will)."""
    if (user, python) in _python_checked:
        return
    result = _run_as(user, [python, "-c", "import torch"])
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
        if pid and _process_identity(pid) == owner:
            continue
        prefix = f"{MARKER_ENV}={base}/".encode()
        stale = []
        for proc in _pids():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{proc}").st_uid == uid and any(
                    var.startswith(prefix) for var in Path(f"/proc/{proc}/environ").read_bytes().split(b"\0")
                ):
                    stale.append(proc)
                elif _comm(proc) == "sshd" and str(base) in Path(f"/proc/{proc}/cmdline").read_text(
                    errors="replace"
                ):
                    stale.append(proc)  # a listener spawned off the main thread
        _terminate(stale)
        shutil.rmtree(base, ignore_errors=True)


def known_hosts_line(node: Node) -> str:
    key_type, key = node.host_key_file.with_suffix(".pub").read_text().split()[:2]
    host = node.address if node.port == 22 else f"[{node.address}]:{node.port}"
    return f"{host} {key_type} {key}"


def sshd_version() -> tuple[int, int]:
    global _sshd_version
    if _sshd_version is None:
        # sshd has no version flag before 9.x; its usage message carries the version too.
        out = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
        match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
        _sshd_version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    return _sshd_version


# ---------------------------------------------------------------------- helpers


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HarnessError(
            "the sshd nodes need root: sshd must switch to the test user, and the harness "
            "creates that user. Run the e2e tests as root (or in the CI container)."
        )


def _sbin(name: str) -> str:
    # Root's PATH does not always include the sbin folders (e.g. `su` without `-`).
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or name


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{shlex.join(args)} failed ({result.returncode}): {result.stderr}")


def _run_as(user: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run as ``user`` with an environment like an ssh session's (no root HOME)."""
    env = {"HOME": pwd.getpwnam(user).pw_dir, "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "USER": user, "LOGNAME": user}  # fmt: skip
    return subprocess.run(
        [_sbin("runuser"), "-u", user, "--", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        cwd="/",
        check=False,
    )


def _shadow_password(user: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user and len(fields) > 1:
            return fields[1]
    return ""


def _keygen(path: Path, comment: str) -> None:
    _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _has_listener(address: str, port: int) -> bool:
    """Whether a TCP socket listens on exactly address:port (IPv4, this network namespace)."""
    packed = int.from_bytes(socket.inet_aton(address), sys.byteorder)
    wanted = f"{packed:08X}:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)
        return any(
            fields[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
            for fields in (line.split() for line in table)
        )


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGTERM the child when the test process dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat_fields(pid: int) -> list[str]:
    # comm may contain spaces and parentheses; it ends at the last ')'.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _state(pid: int) -> str:
    return _stat_fields(pid)[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children_map() -> dict[int, list[int]]:
    """Every live process's children, by parent pid."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            children.setdefault(int(_stat_fields(pid)[1]), []).append(pid)
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


def _process_identity(pid: int) -> str:
    """Return "PID STARTTIME", which unlike the pid alone cannot match a later process."""
    try:
        return f"{pid} {_stat_fields(pid)[19]}"
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    try:
        return _state(pid) != "Z"
    except (OSError, IndexError):
        return False


def _terminate(pids: list[int], *, grace: float = 3.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
