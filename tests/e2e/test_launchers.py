"""Jobs that bring their own launcher, as users' code does: a Lightning
Trainer that starts its node's processes itself, and `accelerate launch` on
every node, both from the variables tsubmit sets, on real sshd nodes."""

import importlib.util
import re

import pytest

from tests.harness.jobs import job_id_of

pytestmark = pytest.mark.e2e


def needs(module: str):
    # scripts/setup.sh --test installs both; elsewhere the test says what is missing.
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed (pip install {module})")


def assert_lines(cli, job_id, line, expected):
    """The matches of LINE in every rank's log, each with the rank it was in,
    are EXPECTED; else the logs are shown. A node's processes share its rank's
    log, and under PYTHONUNBUFFERED=1 (tsubmit's default) print writes a text
    and its newline apart: two processes printing at once share one log line."""
    logs = cli.ok("logs", job_id, "--all").stdout
    found = [(rank, *match) for rank, text in re.findall(r"^\[rank (\d) \S+\] (.*)$", logs, re.M)
             for match in re.findall(line, text)]
    assert sorted(found) == expected, logs


@needs("lightning")
def test_a_lightning_trainer_launches_its_own_processes_on_every_node(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_gpus=2)
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--timeout", "10m",
              "--workdir", str(workdir), "--", "python", "lightning_ddp.py", timeout=900)
    job_id = job_id_of(run)
    assert run.code == 0, run.output + cli("logs", job_id, "--all").stdout
    # Lightning's global ranks 0-1 on the head (tsubmit's rank 0), 2-3 on the worker.
    assert_lines(cli, job_id, r"lightning global_rank (\d) of (\d) node_rank (\d)",
                 [("0", "0", "4", "0"), ("0", "1", "4", "0"), ("1", "2", "4", "1"), ("1", "3", "4", "1")])


@needs("accelerate")
def test_accelerate_launch_runs_on_every_node(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_gpus=2)
    launch = ('exec accelerate launch --multi_gpu --num_machines "$NNODES" --machine_rank "$NODE_RANK" '
              '--main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" '
              '--num_processes "$WORLD_SIZE" accelerate_sum.py')
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--timeout", "10m",
              "--workdir", str(workdir), "--", "sh", "-c", launch, timeout=900)
    job_id = job_id_of(run)
    assert run.code == 0, run.output + cli("logs", job_id, "--all").stdout
    assert_lines(cli, job_id, r"accelerate process (\d) of (\d) sum (\d+)",
                 [("0", "0", "4", "10"), ("0", "1", "4", "10"), ("1", "2", "4", "10"), ("1", "3", "4", "10")])
