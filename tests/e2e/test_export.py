"""`tsubmit export` (a self-contained Ansible project run with plain
ansible-playbook) and `tsubmit run --check` (check mode: nothing launched)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.jobs import attempt_dir, exit_code, job_id_of

pytestmark = pytest.mark.e2e


def rank_log(node, job_id, rank):
    """The rank's whole log, once its attempt ended."""
    attempt = attempt_dir(node, job_id, rank)
    exit_code(attempt, timeout=60)
    return (attempt / "output.log").read_text()


def test_an_exported_project_runs_with_plain_ansible_playbook(cli, nodes, workdir, tmp_path):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    command = ["--", "python", "exit_on_rank.py", "9", "0"]
    project = tmp_path / "project"
    exported = cli.ok("export", "-c", "c", "--executor", "distributed", "--name", "exported",
                      "--env", "JOB_X=1", "--workdir", str(workdir), str(project), *command)
    job_id = job_id_of(exported)
    assert oct((project / "extravars.yml").stat().st_mode & 0o777) == "0o600"
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    play = subprocess.run(["ansible-playbook", "-i", "inventory", "playbooks/submit.yml",
                           "-e", "@extravars.yml"], cwd=project, env=env, capture_output=True, text=True)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    exported_logs = [rank_log(node, job_id, rank) for rank, node in enumerate(nodes.nodes[:2])]

    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--name", "normal", "--wait",
                 "--env", "JOB_X=1", "--workdir", str(workdir), *command)
    normal_id = job_id_of(run)
    normal_logs = [rank_log(node, normal_id, rank) for rank, node in enumerate(nodes.nodes[:2])]
    assert exported_logs == normal_logs == ["node 0 says hello\n", "node 1 says hello\n"]
    assert cli("status", job_id).code == 2  # not tracked: documented


def clean_env() -> dict:
    """A shell of the operator's: no Ansible or tsubmit settings, the venv's tools on PATH."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ANSIBLE_", "TSUBMIT_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def test_an_export_with_hooks_is_self_contained_and_lint_clean(cli, nodes, workdir, tmp_path):
    """The job's hook task file and role, and the inventory's hook, come along:
    the project runs after it moved away and every file it was made from is
    gone, and ansible-lint's production profile passes on it."""
    source = tmp_path / "controller"
    (source / "roles" / "team_prepare" / "tasks").mkdir(parents=True)
    (source / "roles" / "team_prepare" / "tasks" / "main.yml").write_text("---\n" + yaml.safe_dump([{
        "name": "Mark the tree from the team's role",
        "ansible.builtin.copy": {"content": "role\n", "dest": "{{ launch_workdir }}/from-role",
                                 "mode": "0644"}}], sort_keys=False))
    hook = source / "job hook.yml"
    hook.write_text("---\n" + yaml.safe_dump([{
        "name": "Mark the tree from the job's hook",
        "ansible.builtin.copy": {"content": "task\n", "dest": "{{ launch_workdir }}/from-task",
                                 "mode": "0644"}}], sort_keys=False))
    inventory_hook = source / "inventory" / "hooks" / "pre.yml"
    inventory_hook.parent.mkdir(parents=True)
    inventory_hook.write_text("---\n" + yaml.safe_dump([{
        "name": "Mark the tree from the inventory's hook",
        "ansible.builtin.copy": {"content": "inventory\n", "dest": "{{ launch_workdir }}/from-inventory",
                                 "mode": "0644"}}], sort_keys=False))
    inventory = nodes.write_inventory(source / "inventory" / "hosts.yml", group="trainers")
    text = yaml.safe_load(inventory.read_text())
    text["all"]["children"]["trainers"].setdefault("vars", {})["tsubmit_pre_launch_tasks"] = [
        "{{ inventory_dir }}/hooks/pre.yml"]
    inventory.write_text(yaml.safe_dump(text))
    cli.env["TSUBMIT_ANSIBLE_PATH"] = str(source / "roles")
    project = tmp_path / "project"
    exported = cli.ok("export", "-i", str(inventory), "-g", "trainers", "--limit", "node1:node2",
                      "--executor", "distributed", "--name", "hooked", "--hook", f"pre_launch_tasks={hook}",
                      "--hook", "pre_launch_roles=team_prepare", "--workdir", str(workdir),
                      str(project), "--", "python", "-c", "print(sorted(__import__('os').listdir('.')))")
    job_id = job_id_of(exported)
    extravars = (project / "extravars.yml").read_text()
    assert str(tmp_path) not in extravars, extravars

    moved = tmp_path / "elsewhere" / "project"
    shutil.move(project, moved)
    shutil.rmtree(source)
    play = subprocess.run(["ansible-playbook", "-i", "inventory", "playbooks/submit.yml",
                           "-e", "@extravars.yml"], cwd=moved, env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    for rank, node in enumerate(nodes.nodes[:2]):
        log = rank_log(node, job_id, rank)
        for mark in ("from-inventory", "from-role", "from-task"):
            assert mark in log, log

    lint = subprocess.run(["ansible-lint", "--profile", "production", "--nocolor"], cwd=moved,
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]


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
