"""What a user gets from the package: the wheel carries the Ansible content,
tsubmit runs with its own ansible.cfg whatever the environment says,
`cluster create` prompts on a terminal, and a user without root installs it
with pip."""

import os
import pty
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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
        try:
            os.execve(sys.executable, [sys.executable, "-m", "tsubmit", "cluster", "create", "lab"], cli.env)
        finally:
            # a failed exec must not leave a copy of this pytest worker reading the terminal
            os._exit(127)
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


def test_a_user_without_root_installs_tsubmit_with_pip_into_a_venv_of_their_own():
    """`pip install .` as an unprivileged user, into a venv of theirs (docs/getting-started/
    install.md): nothing needs root, no test or docs tool comes along, and tsubmit runs."""
    from tests.harness.accounts import DEFAULT_USER, ensure_test_user, run_as

    account = ensure_test_user(DEFAULT_USER)
    place = Path(tempfile.mkdtemp(prefix="tsubmit-user-install-", dir="/tmp"))
    try:
        place.chmod(0o755)
        source = place / "tsubmit"
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        own = place / "home"
        own.mkdir()
        shutil.chown(own, account.pw_uid, account.pw_gid)
        venv = own / "venv"

        def as_user(*args: str) -> str:
            done = run_as(DEFAULT_USER, ["env", f"TSUBMIT_HOME={own / 'tsubmit'}", *args])
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        as_user("/usr/bin/python3", "-m", "venv", str(venv))
        as_user(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source))
        frozen = as_user(str(venv / "bin" / "pip"), "freeze").split()
        installed = {line.split("==")[0].split(" @ ")[0].lower() for line in frozen}
        assert {"tsubmit", "ansible-core", "ansible-runner"} <= installed
        assert not installed & {"pytest", "pytest-xdist", "ruff", "ansible-lint", "mkdocs", "torch"}
        dry = as_user(str(venv / "bin" / "tsubmit"), "run", "--dry-run", "--workdir",
                      str(source / "examples" / "ddp"), "--", "python", "allreduce.py")
        assert f"{venv}/lib/" in dry and "allreduce.py" in dry
    finally:
        shutil.rmtree(place, ignore_errors=True)
