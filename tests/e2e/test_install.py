"""What a user gets from the package: the wheel carries the Ansible content,
tsubmit runs with its own ansible.cfg whatever the environment says, and
`cluster create` prompts on a terminal."""

import os
import pty
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_the_wheel_carries_playbooks_roles_and_config(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    [wheel] = tmp_path.glob("tsubmit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("tsubmit/_ansible/ansible.cfg", "tsubmit/_ansible/playbooks/submit.yml",
                     "tsubmit/_ansible/roles/launch/templates/launch.sh.j2",
                     "tsubmit/_ansible/roles/preflight/files/probe.py",
                     "tsubmit/_ansible/inventory/local.yml"):
        assert expected in names
    # Run from the unpacked wheel in another folder: it must use its own copy.
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env = {**os.environ, "PYTHONPATH": str(unpacked), "TSUBMIT_HOME": str(tmp_path / "home")}
    dry = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--dry-run", "--", "python", "x.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert f"{unpacked}/tsubmit/_ansible/inventory/local.yml" in dry.stdout


def test_a_stray_ansible_config_does_not_change_tsubmit(cli, tmp_path, workdir):
    stray = tmp_path / "stray.cfg"
    stray.write_text("[defaults]\nstdout_callback = no_such_callback\nroles_path = /nonexistent\n"
                     "host_key_checking = False\n")
    cli.env["ANSIBLE_CONFIG"] = str(stray)
    (workdir / "ansible.cfg").write_text(stray.read_text())
    run = cli("run", "--executor", "distributed", "--wait", "--workdir", str(workdir), "--",
              "python", "-c", "print('fine')", cwd=workdir)
    assert run.code == 0, run.output


def test_cluster_create_prompts_on_a_terminal(cli):
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "tsubmit", "cluster", "create", "lab"], cli.env)
    answers = iter(["alice@10.0.0.5:2222", "10.0.0.6", "", "4", "", "/opt/venv/bin/python"])
    transcript = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        transcript += chunk
        if chunk.rstrip().endswith(b":"):
            os.write(fd, (next(answers) + "\n").encode())
    os.waitpid(pid, 0)
    assert b"cluster lab written" in transcript, transcript
    shown = cli.ok("cluster", "show", "lab", "-o", "json").json()
    assert [(n["rank"], n["host"], n["gpus"]) for n in shown["nodes"]] == [
        (0, "10.0.0.5", 4), (1, "10.0.0.6", 4)]
