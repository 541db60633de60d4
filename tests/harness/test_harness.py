"""Self-test of the sshd node harness: real ssh, host key checking, Ansible, node loss.

If these fail, every e2e test would fail for reasons that have nothing to do with
tsubmit, so this checks the harness on its own first.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .sshd import SshCommandError, SshNodes, xdist_subnet
from .waiting import eventually

# Hosts .250-.252 rather than the default .2: the conftest's session nodes of the
# same xdist worker may be alive at the same time on the low addresses.
FIRST_HOST = 250
ANSIBLE = Path(sys.executable).parent / "ansible"


@pytest.fixture(scope="module")
def nodes() -> Iterator[SshNodes]:
    started = time.monotonic()
    with SshNodes(3, subnet=xdist_subnet(), first_host=FIRST_HOST) as ssh_nodes:
        print(f"\n[harness] 3 sshd nodes up in {time.monotonic() - started:.2f}s")
        yield ssh_nodes


def test_ssh_works_on_each_node_as_the_test_user(nodes: SshNodes) -> None:
    for node in nodes.nodes:
        result = nodes.ssh(node, f'id -un; echo "$SHELL"; cd {node.remote_root} && touch ok')
        assert result.stdout.split() == [nodes.user, "/bin/sh"]
        assert (node.remote_root / "ok").stat().st_uid == node.remote_root.stat().st_uid
    assert len({node.address for node in nodes.nodes}) == 3
    assert oct(nodes.identity_file.stat().st_mode & 0o777) == "0o600"


def test_the_light_user_reads_no_rc_file(nodes: SshNodes) -> None:
    # What keeps the suite fast: the user's login shell is /bin/sh, not bash,
    # so a command over ssh runs no rc file (root's ~/.bashrc costs ~1 s per
    # ssh command); dash reads $ENV only when interactive. Timings belong in
    # bench/, not here.
    node = nodes.nodes[0]
    assert pwd.getpwnam(node.user).pw_shell == "/bin/sh"
    session = nodes.ssh(node, 'echo "bash=${BASH_VERSION:-} env=${ENV:-} shell=$(readlink -f /proc/$$/exe)"')
    assert session.stdout.split() == ["bash=", "env=", f"shell={os.path.realpath('/bin/sh')}"]


def test_wrong_known_hosts_is_rejected(nodes: SshNodes, tmp_path: Path) -> None:
    node1, node2 = nodes.nodes[:2]
    # node2's key filed under node1's address: what a man-in-the-middle looks like.
    node2_key = " ".join(nodes.known_hosts.read_text().splitlines()[1].split()[1:])
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{node1.address}]:{node1.port} {node2_key}\n")
    with pytest.raises(SshCommandError) as excinfo:
        nodes.ssh(node1, "true", known_hosts=wrong)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in excinfo.value.stderr

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    result = nodes.ssh(node2, "true", known_hosts=empty, check=False)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_ansible_ping_with_host_key_checking(nodes: SshNodes, tmp_path: Path) -> None:
    inventory = nodes.write_inventory(tmp_path / "inventory.yml")
    # An empty config and a neutral cwd keep the repository's ansible.cfg out.
    config = tmp_path / "ansible.cfg"
    config.write_text("")
    env = {**os.environ, "ANSIBLE_CONFIG": str(config), "ANSIBLE_HOST_KEY_CHECKING": "True"}
    result = subprocess.run(
        [str(ANSIBLE), "all", "-i", str(inventory), "-m", "ansible.builtin.ping"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for node in nodes.nodes:
        assert f"{node.name} | SUCCESS" in result.stdout


def test_processes_of_tells_nodes_apart(nodes: SshNodes) -> None:
    node1, node2 = nodes.nodes[:2]
    nodes.ssh(node1, "nohup sleep 4242 >/dev/null 2>&1 &")
    # The background job may not have exec'd sleep yet when ssh returns.
    eventually(lambda: nodes.processes_of(node1, r"^sleep 4242$"), timeout=10, interval=0.05,
               message="sleep on node1")
    assert nodes.processes_of(node1, r"^sleep 4242$") == ["sleep 4242"]
    assert nodes.processes_of(node2, r"sleep 4242") == []
    assert nodes.kill_processes(node1) >= 1
    assert nodes.processes_of(node1, r"sleep 4242") == []


def test_stop_node_makes_it_unreachable_and_start_node_brings_it_back(nodes: SshNodes) -> None:
    node = nodes.nodes[2]
    # A long-lived connection must not survive either (think ControlPersist).
    held = subprocess.Popen(
        [*nodes.ssh_args(node), "sleep 600"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually(lambda: nodes.processes_of(node, r"^sleep 600$"), timeout=10, interval=0.05,
                   message="the held connection's sleep")
        nodes.stop_node(node, kill_processes=True)
        assert held.wait(timeout=10) != 0
    finally:
        held.kill()
    result = nodes.ssh(node, "true", check=False, timeout=15)
    assert result.returncode == 255
    assert "Connection refused" in result.stderr
    assert nodes.processes_of(node, r"sleep 600") == []

    nodes.start_node(node)
    assert nodes.ssh(node, "echo back").stdout == "back\n"


def test_lose_node_leaves_no_connection_to_it_and_start_node_brings_it_back(nodes: SshNodes,
                                                                             tmp_path: Path) -> None:
    node = nodes.nodes[1]
    socket_path = tmp_path / "cm"
    # A ControlMaster in the background, as Ansible and tsubmit keep one per node.
    argv = nodes.ssh_args(node)
    argv[argv.index("--"):argv.index("--")] = ["-o", "ControlMaster=yes", "-o", "ControlPersist=600",
                                               "-o", f"ControlPath={socket_path}", "-fN"]
    subprocess.run(argv, check=True, timeout=30, stdin=subprocess.DEVNULL, capture_output=True)
    nodes.ssh(node, "nohup sleep 4343 >/dev/null 2>&1 &")
    eventually(lambda: nodes.processes_of(node, r"^sleep 4343$"), timeout=10, interval=0.05,
               message="sleep on the node")
    try:
        nodes.lose_node(node)
        assert not socket_path.exists()
        masters = [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                   text=True).stdout.splitlines() if str(socket_path) in line]
        assert masters == []
        assert nodes.processes_of(node, r"sleep 4343") == []
        assert nodes.ssh(node, "true", check=False, timeout=15).returncode == 255
    finally:
        nodes.start_node(node)
    assert nodes.ssh(node, "echo back").stdout == "back\n"


def test_a_node_lost_behind_a_partition_keeps_its_processes(nodes: SshNodes) -> None:
    node = nodes.nodes[1]
    nodes.ssh(node, "nohup sleep 4444 >/dev/null 2>&1 &")
    eventually(lambda: nodes.processes_of(node, r"^sleep 4444$"), timeout=10, interval=0.05,
               message="sleep on the node")
    try:
        nodes.lose_node(node, kill_processes=False)
        assert nodes.ssh(node, "true", check=False, timeout=15).returncode == 255
        assert nodes.processes_of(node, r"^sleep 4444$") == ["sleep 4444"]
    finally:
        nodes.start_node(node)
        nodes.kill_processes(node)


def test_unreachable_address_refuses_connections(nodes: SshNodes) -> None:
    address, port = nodes.unreachable_address()
    assert address.startswith(f"127.0.{nodes.subnet}.")
    assert address not in {node.address for node in nodes.nodes}
    nowhere = dataclasses.replace(nodes.nodes[0], address=address, port=port, process=None)
    result = nodes.ssh(nowhere, "true", check=False, timeout=15)
    assert result.returncode == 255
    assert "Connection refused" in result.stderr


def test_stop_cleans_up_processes_and_files() -> None:
    with SshNodes(1, subnet=xdist_subnet(), first_host=FIRST_HOST - 1) as ssh_nodes:
        node = ssh_nodes.nodes[0]
        ssh_nodes.ssh(node, "nohup sleep 4343 >/dev/null 2>&1 &")
        eventually(lambda: ssh_nodes.processes_of(node, r"^sleep 4343$"), timeout=10, interval=0.05,
                   message="sleep on the node")
        sshd_pid = node.process.pid if node.process else 0
        base_dir = ssh_nodes.base_dir
    assert base_dir is not None and not base_dir.exists()
    assert not Path(f"/proc/{sshd_pid}").exists()
    assert ssh_nodes.processes_of(node, r"sleep 4343") == []


@pytest.mark.parametrize(("ci", "outcome", "code"), [("true", "1 failed", 1), ("1", "1 failed", 1),
                                                     (None, "1 skipped", 0), ("false", "1 skipped", 0)])
def test_what_setup_installs_is_a_failure_when_missing_on_ci(tmp_path: Path, ci, outcome, code) -> None:
    # The PostgreSQL secrecy tests call missing() when PostgreSQL is not there:
    # a real pytest run shows what CI would see.
    (tmp_path / "test_needs.py").write_text(
        "from tests.harness.ci import missing\n\n\ndef test_needs_it():\n    missing('no such thing')\n")
    repo = Path(__file__).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs",
                          str(tmp_path / "test_needs.py")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == code, run.stdout + run.stderr
    assert outcome in run.stdout and "no such thing" in run.stdout
