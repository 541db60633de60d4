"""The one place tsubmit runs ssh itself, and what its failures mean.

Every remote step is an Ansible playbook, except what Ansible cannot do:
follow a log live (`logs -f`), hold an interactive session (`tsubmit shell`),
stream a tar (`tsubmit fetch`) and keep a port forward open (`tsubmit
forward`, the Optuna dashboard). Those start a Session here: the command line
is ssh.py's (the inventory's connection settings, as ansible-playbook reads
them), ssh's stderr is read as it comes and its last lines kept, an interrupt
ends the process before it passes on, and an ssh that could not connect or
lost its connection (ssh's own exit code, 255) becomes one error naming the
host. A host with a local connection runs the command here through sh.
"""

import io
import subprocess
import sys
import threading
import time
from collections import deque

from ..errors import LaunchError, UsageError
from . import ssh
from .ports import listening_here
from .ssh_hints import host_key_hint, is_host_key_failure

# stderr lines kept to explain a failure
KEPT_LINES = 20
# What ssh says when the node refused us rather than stopped answering: trying
# again cannot help (a changed host key, a key it does not accept, a name that
# does not resolve).
_REFUSALS = ("Permission denied", "Could not resolve hostname", "Host key verification failed",
             "Bad configuration option")


class Session:
    """One command running on one host: over ssh, or here for a local connection.

    stdin and stdout are as given (a pipe by default; TEXT reads stdout as
    text); stderr is always read here, its last lines kept, and with ECHO
    copied to the user's stderr as it comes (an interactive shell)."""

    def __init__(self, conn: ssh.Connection, argv: list[str], where: str, *, stdin=subprocess.DEVNULL,
                 stdout=subprocess.PIPE, text: bool = False, echo: bool = False):
        self.conn, self.argv, self.where = conn, argv, where
        self._kept: deque[bytes] = deque(maxlen=KEPT_LINES)
        self.process = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        raw = self.process.stdout
        self.stdout = io.TextIOWrapper(raw, errors="replace") if text and raw is not None else raw
        self._reader = threading.Thread(target=self._read_stderr, args=(echo,), daemon=True)
        self._reader.start()

    def _read_stderr(self, echo: bool) -> None:
        assert self.process.stderr is not None
        for line in iter(self.process.stderr.readline, b""):
            self._kept.append(line)
            if echo:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()

    def wait(self) -> int:
        """The command's exit code; an interrupt ends the command, then passes on."""
        try:
            code = self.process.wait()
        except KeyboardInterrupt:
            self.end()
            raise
        self._reader.join(timeout=5)
        return code

    def end(self) -> None:
        """End the command if it still runs: TERM, then KILL after 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def stderr(self) -> str:
        """The last lines ssh and the command wrote on stderr."""
        return b"".join(self._kept).decode(errors="replace")

    def last_line(self, default: str) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else default

    @property
    def unreachable(self) -> bool:
        """Whether ssh could not connect, or lost its connection (its own exit code)."""
        return self.process.returncode == ssh.SSH_FAILED and not self.conn.local

    @property
    def refused(self) -> bool:
        """Whether the node refused us rather than stopped answering: trying again
        cannot help."""
        text = self.stderr
        return is_host_key_failure(text) or any(marker in text for marker in _REFUSALS)

    def reason(self) -> str:
        """Why ssh failed, in a line: the host key hint (which known_hosts file ssh
        read, what to run) or ssh's last word."""
        text = self.stderr
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("@")]
        return host_key_hint(text, self.argv) or (lines[-1] if lines else "ssh failed")

    def unreachable_error(self) -> LaunchError:
        """The error for an ssh that could not connect, naming the host."""
        return LaunchError(f"cannot reach {self.where}; check it with `tsubmit cluster check`",
                           {self.conn.host: self.reason()})


def run(conn: ssh.Connection, argv: list[str], where: str, *, timeout: float) -> tuple[int, str, str]:
    """Run ARGV to its end: (exit code, stdout, stderr's last lines) as text. An ssh that could not connect
    fails naming the host; so does a command that gave no answer within TIMEOUT."""
    session = Session(conn, argv, where)
    assert session.stdout is not None
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(session.stdout.read()), daemon=True)
    reader.start()
    try:
        session.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        session.end()
        raise LaunchError(f"no answer from {where}", {conn.host: f"no answer within {timeout:g} s"}) from None
    except KeyboardInterrupt:
        session.end()
        raise
    reader.join(timeout=5)
    session.wait()
    if session.unreachable:
        raise session.unreachable_error()
    return session.process.returncode, b"".join(output).decode(errors="replace"), session.stderr


def forward(conn: ssh.Connection, where: str, local_port: int, remote_port: int, *,
            option: str = "--local-port", timeout: float = 30.0) -> Session:
    """Start forwarding 127.0.0.1:LOCAL_PORT here to 127.0.0.1:REMOTE_PORT on the host,
    and return its Session once the local port listens (end it when done). A local
    port already taken is a usage error naming OPTION; an ssh that ends first, or a port that
    does not listen within TIMEOUT, fails naming the host."""
    session = Session(conn, ssh.forward_argv(conn, local_port, remote_port), where, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not listening_here(local_port):
            if session.process.poll() is not None:
                raise ended_forward(session, "cannot forward", option)
            if time.monotonic() > deadline:
                raise LaunchError(f"cannot forward from {conn.host}: the local port {local_port} did not "
                                  f"listen within {timeout:g}s", {conn.host: "no answer"})
            time.sleep(0.05)
    except BaseException:
        session.end()
        raise
    return session


def ended_forward(session: Session, what: str, option: str = "--local-port") -> Exception:
    """The error for a forward's ssh that ended (WHAT: what could not be done; OPTION:
    the one that chooses the local port)."""
    session.wait()
    text = session.stderr
    if "Address already in use" in text or "cannot listen to port" in text:
        return UsageError(f"{what}: the local port is already in use on this machine; choose another "
                          f"with {option}")
    if session.unreachable:
        return session.unreachable_error()
    ended = f"ssh exited with {session.process.returncode}"
    return LaunchError(f"{what} from {session.where}", {session.conn.host: session.last_line(ended)})
