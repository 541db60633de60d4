"""Self-test of the unkind nodes (issue 16): the stale python3.13 shim first on
PATH, the slow login, the bastion, the ops team's inventory directory. If these
fail, the tests built on them would test the harness instead of tsubmit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .inventories import SECRETS

ANSIBLE_BIN = Path(sys.executable).parent


def test_the_first_python3_13_on_the_path_is_a_stale_pyenv_shim(nodes, ops_nodes):
    for harness in (nodes, ops_nodes):
        node = harness.nodes[0]
        found = harness.ssh(node, "command -v python3.13").stdout.strip()
        assert found == f"{harness.shim_dir}/python3.13"
        broken = harness.ssh(node, "python3.13 -c 'print(1)'", check=False)
        assert broken.returncode == 127
        assert "pyenv: python3.13: command not found" in broken.stderr
        # The real interpreter the host variables name still works.
        assert harness.ssh(node, f"{harness.python} -c 'print(7)'").stdout.strip() == "7"


def test_a_slow_login_delays_every_session_and_keeps_sftp(ops_nodes, tmp_path):
    node = ops_nodes.nodes[0]
    started = time.monotonic()
    assert ops_nodes.ssh(node, "echo $((6 * 7))").stdout.strip() == "42"
    assert time.monotonic() - started >= ops_nodes.slow_rc
    source = tmp_path / "sent.txt"
    source.write_text("through sftp\n")
    target = node.remote_root / "sftp-check.txt"
    sftp = ["sftp", "-F", "/dev/null", "-P", str(node.port), "-i", str(ops_nodes.identity_file),
            "-o", f"UserKnownHostsFile={ops_nodes.known_hosts}", "-o", "BatchMode=yes",
            "-b", "-", f"{node.user}@{node.address}"]
    batch = subprocess.run(sftp, input=f"put {source} {target}\n",
                           capture_output=True, text=True, timeout=30, check=False)
    assert batch.returncode == 0, batch.stderr
    assert target.read_text() == "through sftp\n"


def test_a_node_is_reached_through_the_bastion(ops_nodes):
    *_, target, bastion = ops_nodes.nodes
    common = ops_nodes.host_vars(target, bastion=bastion)["ansible_ssh_common_args"]
    args = ["ssh", *common.split(), "-i", str(ops_nodes.identity_file), "-p", str(target.port),
            "-l", target.user, "--", target.address, "echo $SSH_CONNECTION"]
    via = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert via.returncode == 0, via.stderr
    assert via.stdout.split()[2:] == [target.address, str(target.port)]


def test_ansible_reads_the_ops_inventory_and_its_discovery_picks_the_stale_shim(ops_inventory):
    inventory = ["-i", str(ops_inventory.path), "--vault-password-file",
                 str(ops_inventory.vault_password_file)]
    host = subprocess.run([str(ANSIBLE_BIN / "ansible-inventory"), *inventory, "--host",
                           ops_inventory.head.name], capture_output=True, text=True, check=True)
    head_vars = json.loads(host.stdout)
    assert head_vars["tsubmit_head"] is True
    assert "ansible_python_interpreter" not in head_vars
    lowest = min(ops_inventory.members, key=lambda n: [int(p) for p in n.address.split(".")])
    assert ops_inventory.head is not lowest
    # A Python module (ping) run with Ansible's own interpreter discovery fails on
    # these nodes: that is the trap every remote step of tsubmit must avoid.
    ping = subprocess.run([str(ANSIBLE_BIN / "ansible"), *inventory, ops_inventory.group, "-m",
                           "ansible.builtin.ping", "-e", "ansible_host_key_checking=true"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert ping.returncode != 0
    assert "pyenv: python3.13: command not found" in ping.stdout + ping.stderr
    secret_file = (ops_inventory.path / "group_vars" / "all.yml").read_text()
    assert "$ANSIBLE_VAULT;1.1;AES256" in secret_file
    assert not any(secret in secret_file for secret in SECRETS.values())


@pytest.mark.parametrize("name", ["site_token"])
def test_the_vaulted_variable_decrypts_with_the_password_file(ops_inventory, name):
    result = subprocess.run(
        [str(ANSIBLE_BIN / "ansible"), "-i", str(ops_inventory.path), "--vault-password-file",
         str(ops_inventory.vault_password_file), "localhost", "-c", "local", "-m",
         "ansible.builtin.debug", "-a", f"msg={{{{ hostvars['{ops_inventory.head.name}'].{name} }}}}"],
        capture_output=True, text=True, timeout=60, check=False)
    assert SECRETS[name] in result.stdout, result.stdout + result.stderr
