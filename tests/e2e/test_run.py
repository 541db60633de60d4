"""`tsubmit run` on real sshd nodes: torchrun and distributed jobs, the local
cluster, quoting, and a launch that fails on one node."""

import json
import os
import pwd
import re
from pathlib import Path

import pytest

from tests.harness.jobs import attempt_dir, job_id_of

pytestmark = pytest.mark.e2e


def rank_lines(output: str, pattern: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(pattern, line)]


@pytest.mark.parametrize("count", [2, 3])
def test_torchrun_allreduce_on_real_nodes(cli, nodes, workdir, count):
    cli.write_cluster("c", nodes, nodes.nodes[:count])
    run = cli("run", "-c", "c", "--wait", "--workdir", str(workdir), "--", "python", "allreduce.py")
    job_id = job_id_of(run)
    assert run.code == 0, run.output + cli("logs", job_id, "--all").stdout

    logs = cli.ok("logs", job_id, "--all").stdout
    results = rank_lines(logs, r"allreduce=")
    assert len(results) == count
    expected = count * (count + 1) / 2
    for line in results:
        assert f"allreduce={expected:g} expected={expected:g} weights_in_sync=True OK" in line
    # every rank wrote its own log on its own node
    for rank, node in enumerate(nodes.nodes[:count]):
        log = attempt_dir(node, job_id, rank) / "output.log"
        assert f"/{count} node {rank} allreduce={expected:g}" in log.read_text()


def test_distributed_executor_sees_the_environment_contract(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "envcheck", "--wait",
              "--env", "JOB_GREETING=hello world", "--workdir", str(workdir), "--",
              "python", "show_env.py")
    assert run.code == 0, run.output
    job = cli.job("envcheck")
    logs = cli.ok("logs", "envcheck", "--all").stdout
    seen = {}
    for line in rank_lines(logs, "ENV "):
        values = json.loads(line.split("ENV ", 1)[1])
        seen[int(values["NODE_RANK"])] = values
    assert sorted(seen) == [0, 1]
    head, worker = nodes.nodes[0], nodes.nodes[1]
    for rank, values in seen.items():
        assert values["MASTER_ADDR"] == head.address
        assert values["MASTER_PORT"].isdigit()
        assert values["WORLD_SIZE"] == "2" and values["NNODES"] == "2"
        assert values["NPROC_PER_NODE"] == values["LOCAL_WORLD_SIZE"] == "1"
        assert values["RANK"] == str(rank) and values["LOCAL_RANK"] == "0"
        assert values["TSUBMIT_JOB_ID"] == job["id"]
        assert values["TSUBMIT_JOB_NAME"] == "envcheck"
        assert values["TSUBMIT_ATTEMPT"] == "1"
        assert values["TSUBMIT_NODE_IPS"] == f"{head.address},{worker.address}"
        assert values["hostfile"] == f"{head.address} slots=1\n{worker.address} slots=1\n"
        assert values["JOB_GREETING"] == "hello world"
        assert values["PATH"].startswith(nodes.python.rsplit("/", 1)[0] + ":")
        assert "show_env.py" in values["cwd_files"] and ".tsubmit" in values["cwd_files"]
    assert seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]


def test_local_cluster_runs_the_ddp_example(cli, workdir):
    run = cli("run", "--gpus", "2", "--wait", "--workdir", str(workdir), "--", "python", "allreduce.py")
    job_id = job_id_of(run)
    assert run.code == 0, run.output + cli("logs", job_id).stdout
    logs = cli.ok("logs", job_id).stdout
    assert len(rank_lines(logs, r"allreduce=3 expected=3 weights_in_sync=True OK")) == 2


def test_hostile_strings_are_passed_exactly(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    hostile = "$(touch /tmp/tsubmit-pwned)`id`; echo 'x'"
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--name", hostile,
              "--env", f"JOB_HOSTILE={hostile}", "--workdir", str(workdir), "--",
              "python", "-c", 'import os; print("a b; $HOME"); print(os.environ["JOB_HOSTILE"])')
    assert run.code == 0, run.output
    logs = cli.ok("logs", hostile).stdout.splitlines()
    assert logs == ["a b; $HOME", hostile]
    assert not __import__("os").path.exists("/tmp/tsubmit-pwned")


def test_a_node_that_cannot_be_reached_fails_the_launch_and_leaves_nothing(cli, nodes, workdir):
    address, port = nodes.unreachable_address()
    path = cli.write_cluster("c", nodes, nodes.nodes[:1])
    text = path.read_text() + (
        f"    ghost:\n      ansible_host: {address}\n      ansible_port: {port}\n"
        f"      ansible_user: {nodes.nodes[0].user}\n"
    )
    path.write_text(text)
    run = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py")
    assert run.code == 3, run.output
    assert "ghost" in run.stderr and "Connection refused" in run.stderr
    assert "Traceback" not in run.output
    [job] = cli.ok("list", "-o", "json").json()
    assert job["state"] == "failed"
    head = nodes.nodes[0]
    assert nodes.processes_of(head, "sleeper.py") == []
    assert not (head.remote_root / job["id"]).exists()


def test_a_retired_role_variable_in_the_inventory_is_refused_naming_its_replacement(cli, nodes, workdir):
    # The launch contract reads the host variables (tsubmit_*) only: a host that
    # still sets an override of earlier versions is told which one replaced it,
    # instead of launching without it.
    head = nodes.nodes[0]
    cli.write_cluster("c", nodes, [head], launch_host_env={"NCCL_SOCKET_IFNAME": "lo"})
    run = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py")
    assert run.code == 3, run.output
    assert f"{head.name}: launch_host_env is no longer read: set the host variable tsubmit_env" in run.stderr
    [job] = cli.ok("list", "--all", "-o", "json").json()
    assert job["state"] == "failed"
    assert nodes.processes_of(head, "sleeper.py") == []
    assert not (head.remote_root / job["id"]).exists()


def test_a_python_under_a_tilde_is_refused_by_run_and_failed_by_cluster_check(cli, nodes, workdir):
    # The job runs tsubmit_python as it is written: no shell expands its ~. That
    # python exists under the node user's home here, so a check that expanded
    # the ~ passed while every run failed on "~/...: not found".
    head = nodes.nodes[0]
    home = Path(pwd.getpwnam(head.user).pw_dir)
    venv = home / f"tilde-venv-{os.getpid()}"
    venv.symlink_to(Path(nodes.python).parent.parent)
    try:
        python = f"~/{venv.name}/bin/python"
        cli.write_cluster("c", nodes, [head], tsubmit_python=python)
        run = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py")
        assert run.code == 3, run.output
        assert (f"{head.name}: tsubmit_python is {python}: a leading ~ is not expanded where the job "
                "runs; set the full path") in run.stderr, run.output
        [job] = cli.ok("list", "--all", "-o", "json").json()
        assert job["state"] == "failed"
        assert nodes.processes_of(head, "sleeper.py") == []
        assert not (head.remote_root / job["id"]).exists()
        check = cli("cluster", "check", "c", "-o", "json")
        assert check.code == 3, check.output
        verdict = check.json()["hosts"][head.name]["python"]
        assert verdict["status"] == "fail" and verdict["detail"] == f"{python} not found", verdict
        assert "full path" in verdict["remedy"], verdict
    finally:
        venv.unlink()


def test_torchrun_missing_on_a_node_names_the_host_and_the_remedy(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    path = cli.home / "config" / "clusters" / "c.yml"
    path.write_text(path.read_text().replace(
        "tsubmit_remote_root", "tsubmit_torchrun: /nonexistent/torchrun\n      tsubmit_remote_root", 1))
    run = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py")
    assert run.code == 3, run.output
    assert f"{nodes.nodes[0].name}: /nonexistent/torchrun not found" in run.stderr
    assert "tsubmit_torchrun" in run.stderr
    for node in nodes.nodes[:2]:
        assert nodes.processes_of(node, "sleeper.py") == []


def test_dry_run_shows_each_rank_command_and_runs_nothing(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_gpus=2)
    run = cli.ok("run", "-c", "c", "--dry-run", "--max-restarts", "2", "--workdir", str(workdir),
                 "--", "python", "train.py", "--lr", "0.1")
    head, worker = nodes.nodes[0], nodes.nodes[1]
    assert f"head: {head.name} (first host of group all)" in run.stdout
    assert (f"torchrun --nnodes=2 --node-rank=1 --nproc-per-node=2 --rdzv-backend=c10d "
            f"--rdzv-endpoint='{head.address}:<port>'") in run.stdout
    assert "--max-restarts=2 --tee=3 --log-dir=" in run.stdout
    assert "/workers' --no-python python train.py --lr 0.1" in run.stdout
    assert f"--local-addr={worker.address}" in run.stdout
    assert cli.ok("list", "-o", "json").json() == []
