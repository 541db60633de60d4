"""`tsubmit export` (a self-contained Ansible project run with plain
ansible-playbook) and `tsubmit run --check` (check mode: nothing launched)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def rank_log(node, job_id, rank):
    path = node.remote_root / job_id / f"rank-{rank}" / "attempt-1" / "output.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (path.parent / "exit_code").exists():
            return path.read_text()
        time.sleep(0.5)
    raise AssertionError(f"{path} did not finish")


def test_an_exported_project_runs_with_plain_ansible_playbook(cli, nodes, workdir, tmp_path):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    command = ["--", "python", "exit_on_rank.py", "9", "0"]
    project = tmp_path / "project"
    exported = cli.ok("export", "-c", "c", "--executor", "distributed", "--name", "exported",
                      "--env", "JOB_X=1", "--workdir", str(workdir), str(project), *command)
    job_id = re.search(r"job (\w+) ", exported.stdout).group(1)
    assert oct((project / "extravars.yml").stat().st_mode & 0o777) == "0o600"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    play = subprocess.run(["ansible-playbook", "-i", "inventory", "playbooks/submit.yml",
                           "-e", "@extravars.yml"], cwd=project, env=env, capture_output=True, text=True)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    exported_logs = [rank_log(node, job_id, rank) for rank, node in enumerate(nodes.nodes[:2])]

    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--name", "normal", "--wait",
                 "--env", "JOB_X=1", "--workdir", str(workdir), *command)
    normal_id = re.search(r"job (\w+) ", run.stdout).group(1)
    normal_logs = [rank_log(node, normal_id, rank) for rank, node in enumerate(nodes.nodes[:2])]
    assert exported_logs == normal_logs == ["node 0 says hello\n", "node 1 says hello\n"]
    assert cli("status", job_id).code == 2  # not tracked: documented


def test_export_into_a_folder_that_is_not_empty(cli, workdir, tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "keep.txt").write_text("mine")
    run = cli("export", "--workdir", str(workdir), str(tmp_path / "project"), "--", "python", "x.py")
    assert run.code == 2 and "is not empty" in run.stderr and "--force" in run.stderr
    assert (tmp_path / "project" / "keep.txt").read_text() == "mine"


def test_check_mode_launches_nothing(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    before = [set(os.listdir(node.remote_root)) for node in nodes.nodes[:2]]
    run = cli("run", "-c", "c", "--check", "--executor", "distributed", "--workdir", str(workdir), "--",
              "python", "sleeper.py")
    assert run.code == 0, run.output
    assert "Ship the job's tree and launch script, and start the rank" in run.stdout + run.stderr
    assert "nothing was launched" in run.stdout
    after = [set(os.listdir(node.remote_root)) for node in nodes.nodes[:2]]
    assert after == before  # no job dir
    for node in nodes.nodes[:2]:
        assert nodes.processes_of(node, r"sleeper\.py") == []
    assert cli.ok("list", "-o", "json").json() == []
