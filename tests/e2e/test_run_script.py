"""The collection's action tsubmit.cluster.run_script on a real sshd node,
driven by a plain ansible-playbook: what arrives, in how many SSH executions,
and what is left behind."""

import hashlib
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
# Above the action's in-memory limit (16 MiB): sent by a file transfer first.
LARGE = 17 * 1024 * 1024

REPORT = """#!/bin/sh
here=$(dirname "$0")
echo "cwd $(pwd)"
for name in "$@"; do
    echo "file $name $(sha256sum "$here/$name" | cut -d' ' -f1) $(stat -c %a "$here/$name")"
done
"""


def play(tmp_path: Path, node, nodes, task: dict) -> subprocess.CompletedProcess:
    """One task on one node, at -vvv (which prints each SSH execution)."""
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "report.sh").write_text(REPORT)
    (tmp_path / "files" / "fail.sh").write_text("echo broken >&2\nexit 3\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {node.name: nodes.host_vars(node)}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "run_script", "hosts": "all", "gather_facts": False,
                                         "tasks": [task]}], sort_keys=False))
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(REPO), ANSIBLE_NOCOLOR="1",
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / "cp"))
    return subprocess.run([str(BIN / "ansible-playbook"), "-vvv", "-i", str(inventory), str(playbook)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def ssh_executions(output: str) -> int:
    return len(re.findall(r"SSH: EXEC ", output))


def leftovers(node) -> list[str]:
    return [name for name in os.listdir(node.remote_root) if name.startswith(".tsubmit-script.")]


def test_a_script_and_its_files_arrive_in_one_ssh_execution(nodes, tmp_path):
    node = nodes.nodes[0]
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(4096))
    tmpdir = node.remote_root / f"made-{tmp_path.name}"  # missing: run_script makes it
    result = play(tmp_path, node, nodes, {
        "name": "Run the report", "tsubmit.cluster.run_script": {
            "script": "report.sh", "args": ["small.bin", "note.txt"], "tmpdir": str(tmpdir),
            "files": [{"name": "small.bin", "src": str(small)},
                      {"name": "note.txt", "content": "hello\n", "mode": "0640"}]}})
    assert result.returncode == 0, result.stdout[-3000:]
    assert ssh_executions(result.stdout) == 1, result.stdout[-3000:]
    home = pwd.getpwnam(nodes.user).pw_dir
    assert f"cwd {home}" in result.stdout  # run from the login directory, as ansible.builtin.script
    assert f"file small.bin {hashlib.sha256(small.read_bytes()).hexdigest()} 600" in result.stdout
    note_digest = hashlib.sha256(b"hello\n").hexdigest()
    assert f"file note.txt {note_digest} 640" in result.stdout
    assert tmpdir.is_dir() and list(tmpdir.iterdir()) == []


def test_a_large_file_goes_by_file_transfer_and_arrives_whole(nodes, tmp_path):
    node = nodes.nodes[0]
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(LARGE))
    result = play(tmp_path, node, nodes, {
        "name": "Run the report", "tsubmit.cluster.run_script": {
            "script": "report.sh", "args": ["large.bin"], "tmpdir": str(node.remote_root),
            "files": [{"name": "large.bin", "src": str(large)}]}})
    assert result.returncode == 0, result.stdout[-3000:]
    # mktemp, the transfer (sftp), the run
    assert ssh_executions(result.stdout) == 3, result.stdout[-3000:]
    assert f"file large.bin {hashlib.sha256(large.read_bytes()).hexdigest()} 600" in result.stdout
    assert leftovers(node) == []


def test_a_failing_script_fails_the_task_with_its_code_and_leaves_nothing(nodes, tmp_path):
    node = nodes.nodes[0]
    result = play(tmp_path, node, nodes, {
        "name": "Run a failing script", "tsubmit.cluster.run_script": {
            "script": "fail.sh", "tmpdir": str(node.remote_root)}})
    assert result.returncode == 2
    assert re.search(r'"rc": 3\b', result.stdout) and "broken" in result.stdout, result.stdout[-3000:]
    assert leftovers(node) == []


def test_a_file_name_that_is_not_plain_is_refused_before_anything_runs(nodes, tmp_path):
    node = nodes.nodes[0]
    result = play(tmp_path, node, nodes, {
        "name": "Run the report", "tsubmit.cluster.run_script": {
            "script": "report.sh", "files": [{"name": "../escape", "content": "x"}]}})
    assert result.returncode == 2
    assert "'../escape' is not a plain file name" in result.stdout, result.stdout[-3000:]
    assert ssh_executions(result.stdout) == 0
