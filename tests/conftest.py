"""Shared fixtures: real sshd nodes for the session, an isolated TSUBMIT_HOME
per test, a helper that runs the real `tsubmit` command, notification endpoints
and the real crontab."""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.harness import SshNodes, xdist_subnet
from tests.harness import crontab as real_crontab
from tests.harness.endpoints import Mailbox, Webhook
from tests.harness.inventories import OpsInventory, write_ops_inventory
from tests.harness.jobs import TSUBMIT

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):
        return json.loads(self.stdout)


class Cli:
    """Runs `tsubmit` as a user would, in a TSUBMIT_HOME of its own."""

    def __init__(self, home: Path):
        self.home = home
        # Every runner data dir kept (tsubmit keeps failed runs only): the tests
        # read them as the record of which playbooks ran and how.
        self.env = {**os.environ, "TSUBMIT_HOME": str(home), "NO_COLOR": "1", "TSUBMIT_KEEP_RUNS": "1"}

    def __call__(self, *args: str, cwd: Path | None = None, timeout: float = 300,
                 input: str | None = None) -> Result:
        process = subprocess.run(
            [*TSUBMIT, *args], cwd=cwd or REPO, env=self.env, capture_output=True, text=True,
            timeout=timeout, input=input if input is not None else "",
        )
        return Result(process.returncode, process.stdout, process.stderr)

    def at_once(self, *args: str, count: int = 2, timeout: float = 300) -> list[Result]:
        """COUNT `tsubmit ARGS` started together, racing each other; their results. None is
        left running, even when one runs past TIMEOUT."""
        processes = [subprocess.Popen([*TSUBMIT, *args], cwd=REPO, env=self.env, text=True,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE) for _ in range(count)]
        try:
            outputs = [process.communicate(timeout=timeout) for process in processes]
        finally:
            for process in processes:
                process.kill()
                process.wait()
        return [Result(process.returncode, out, err)
                for process, (out, err) in zip(processes, outputs, strict=True)]

    def ok(self, *args: str, **kwargs) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, f"tsubmit {' '.join(args)} exited {result.code}:\n{result.output}"
        return result

    def write_cluster(self, name: str, nodes: SshNodes, members, **extra_vars) -> Path:
        """A cluster inventory with the given nodes (head first) and extra host vars."""
        hosts = {node.name: {**nodes.host_vars(node), **extra_vars} for node in members}
        path = self.home / "config" / "clusters" / f"{name}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
        return path

    def job(self, ref: str) -> dict:
        return self.ok("status", ref, "-o", "json").json()

    def status_runs(self) -> int:
        return len(list((self.home / "state" / "runs").glob("*-status-*")))


@pytest.fixture(scope="session")
def nodes():
    """Three real sshd nodes on loopback addresses, shared by the whole session.

    As unkind as real nodes: every session's PATH starts with a stale pyenv
    shim `python3.13` (what Ansible's interpreter discovery would pick); the
    connection settings of `host_vars` name the real interpreter, as `cluster
    add` clusters do.
    """
    with SshNodes(3, subnet=xdist_subnet(), stale_python=True) as started:
        yield started


# Far from the session nodes (.2-.4) and the harness self-test (.249-.252).
OPS_FIRST_HOST = 200
# A login shell that runs pyenv init costs about this on every SSH session.
OPS_SLOW_RC = 0.15


@pytest.fixture(scope="session")
def ops_nodes():
    """Four more sshd nodes, the unkindest: the stale python3.13 first on PATH and a slow
    login on every session. The last one serves as the ops inventory's bastion."""
    with SshNodes(4, subnet=xdist_subnet(), first_host=OPS_FIRST_HOST, stale_python=True,
                  slow_rc=OPS_SLOW_RC) as started:
        yield started


@pytest.fixture
def ops_inventory(ops_nodes, tmp_path) -> OpsInventory:
    """An ops team's inventory directory of three of `ops_nodes` (tests/harness/inventories.py):
    hosts.ini, group_vars/ with a top-level vaulted variable and a ProxyJump bastion,
    host_vars/, the head at the highest address, no ansible_python_interpreter."""
    *members, bastion = ops_nodes.nodes
    return write_ops_inventory(tmp_path / "ops", ops_nodes, members, bastion)


@pytest.fixture
def no_injection():
    """Fails the test if a job's string was evaluated anywhere: the render tests' hostile
    values (a command substitution, a Jinja lookup) would touch this file."""
    marker = Path("/tmp/tsubmit-render-pwned")
    marker.unlink(missing_ok=True)
    yield
    assert not marker.exists(), "a job's string was evaluated (a substitution or a template ran)"


@contextlib.contextmanager
def fresh_cli() -> Iterator[Cli]:
    """A Cli in a new TSUBMIT_HOME of its own, removed afterwards; for a second controller
    or a home shared by a module's tests. A short path: SSH control sockets live under it
    (see ansible_env.control_dir)."""
    home = Path(tempfile.mkdtemp(prefix="tsh-", dir="/tmp"))
    try:
        yield Cli(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def cli():
    with fresh_cli() as made:
        yield made


@pytest.fixture
def workdir(tmp_path):
    """A working directory holding the examples and small test scripts."""
    target = tmp_path / "work"
    shutil.copytree(EXAMPLES / "ddp", target)
    shutil.copytree(REPO / "tests" / "jobs", target, dirs_exist_ok=True)
    return target


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.close()


@pytest.fixture
def saved_crontab():
    """The real crontab of this user (or its absence), restored after the test, also
    by the next run when this one is killed (tests/harness/crontab.py). One test at a
    time has it, whatever the number of xdist workers."""
    with real_crontab.held():
        yield


@pytest.fixture
def crontab(saved_crontab):
    """The real crontab of this user holding one entry of its own, restored after the test."""
    real_crontab.write("7 3 * * * echo foreign-entry\n")


@pytest.fixture
def lost(nodes):
    """Lose nodes for the test (nodes.lose_node), brought back at its end whatever happens."""
    taken = []

    def lose(node, **options):
        taken.append(node)
        nodes.lose_node(node, **options)

    yield lose
    for node in taken:
        nodes.start_node(node)
        nodes.kill_processes(node)
