"""torch's global ranks follow tsubmit's with torchrun's c10d rendezvous (issue 16,
item 3): the head, at the highest address, holds global ranks 0..P-1 and
GROUP_RANK == NODE_RANK on every node; --max-restarts restarts the whole group
on every node and keeps the order; the job's own processes never see tsubmit's
helper on PYTHONPATH."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness import eventually
from tests.harness.jobs import job_id_of, log_of

pytestmark = pytest.mark.e2e

RANKS_JOB = '''
import json, os, sys, time
import torch
import torch.distributed as dist

print("START " + os.environ["GROUP_RANK"] + " " + os.environ["LOCAL_RANK"], flush=True)
first_round = not os.path.exists("failed-once")  # node-local: each node has its own tree
dist.init_process_group("gloo")
value = torch.tensor([dist.get_rank()], dtype=torch.float64)
dist.all_reduce(value)
fail_once = os.environ.get("FAIL_GROUP_RANK")
if fail_once and os.environ["GROUP_RANK"] == fail_once and os.environ["LOCAL_RANK"] == "0" \\
        and first_round:
    open("failed-once", "w").close()
    sys.exit(3)  # the other workers are not in a collective: their agents restart them
if fail_once and first_round:
    time.sleep(30)  # killed by the restart before it gets further
print("RANKS " + json.dumps({
    "rank": dist.get_rank(), "world": dist.get_world_size(), "sum": value.item(),
    "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
    **{name: os.environ.get(name) for name in ("RANK", "GROUP_RANK", "NODE_RANK", "LOCAL_RANK",
                                               "MASTER_ADDR", "PYTHONPATH")},
    "sitecustomize": "sitecustomize" in sys.modules and getattr(sys.modules["sitecustomize"], "__file__", ""),
}), flush=True)
dist.barrier()
dist.destroy_process_group()
'''


def reports(text: str) -> list[dict]:
    return [json.loads(line.split("RANKS ", 1)[1]) for line in text.splitlines() if "RANKS " in line]


def highest_first(nodes, count):
    """COUNT nodes, head first, the head at the highest address of them."""
    chosen = sorted(nodes.nodes[:count], key=lambda n: [int(p) for p in n.address.split(".")])
    return [chosen[-1], *chosen[:-1]]


def run_ranks_job(cli, nodes, members, workdir, *extra):
    (workdir / "ranks.py").write_text(RANKS_JOB)
    cli.write_cluster("c", nodes, members, tsubmit_gpus=2)
    run = cli("run", "-c", "c", "--wait", "--timeout", "150s", "--workdir", str(workdir), *extra, "--",
              "python", "ranks.py", timeout=240)
    job = job_id_of(run)
    return run, job


def test_the_head_holds_global_ranks_0_to_p_minus_1_whatever_the_addresses(cli, nodes, workdir):
    members = highest_first(nodes, 3)
    assert members[0].address > members[1].address  # the head sorts last
    run, job = run_ranks_job(cli, nodes, members, workdir)
    assert run.code == 0, run.output + cli("logs", job, "--all").stdout
    logs = cli.ok("logs", job, "--all").stdout
    for tsubmit_rank, node in enumerate(members):
        mine = [r for r in reports(logs) if r["NODE_RANK"] == str(tsubmit_rank)]
        assert len(mine) == 2, logs
        for report in mine:
            assert report["GROUP_RANK"] == report["NODE_RANK"] == str(tsubmit_rank)
            assert report["rank"] == int(report["RANK"]) == 2 * tsubmit_rank + int(report["LOCAL_RANK"])
            assert report["world"] == 6 and report["sum"] == 15
            assert report["sitecustomize"] is False or "tsubmit-lib" not in report["sitecustomize"]
            assert "tsubmit-lib" not in (report["PYTHONPATH"] or "")
        assert all(f"[rank {tsubmit_rank} {node.name}] [worker {report['rank']}] RANKS " in logs
                   for report in mine)
    # `tsubmit logs JOB` (rank 0, the head) shows torch's rank 0.
    assert 0 in {r["rank"] for r in reports(cli.ok("logs", job).stdout)}


def test_max_restarts_restarts_every_node_and_keeps_the_order(cli, nodes, workdir):
    members = highest_first(nodes, 2)
    run, job = run_ranks_job(cli, nodes, members, workdir, "--max-restarts", "1",
                             "--env", "FAIL_GROUP_RANK=1")
    assert run.code == 0, run.output + cli("logs", job, "--all").stdout
    logs = cli.ok("logs", job, "--all").stdout
    # Node 1's worker failed in the first round: every node's workers started
    # again (two starts each), and the second round kept the order.
    for tsubmit_rank, node in enumerate(members):
        starts = [line for line in logs.splitlines()
                  if re.match(rf"\[rank {tsubmit_rank} {node.name}\] \[worker \d\] START ", line)]
        assert sorted(line.split()[-2:] for line in starts) == [
            [str(tsubmit_rank), "0"], [str(tsubmit_rank), "0"], [str(tsubmit_rank), "1"],
            [str(tsubmit_rank), "1"]], logs
    finished = reports(logs)
    assert sorted((r["NODE_RANK"], r["LOCAL_RANK"]) for r in finished) == [
        ("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    for report in finished:
        assert report["GROUP_RANK"] == report["NODE_RANK"]
        assert report["rank"] == 2 * int(report["NODE_RANK"]) + int(report["LOCAL_RANK"])
    assert {r["restart"] for r in finished if r["NODE_RANK"] == "1"} == {1}


def test_turned_off_torch_orders_by_address(cli, nodes, workdir):
    """TSUBMIT_RANK_ORDER=off gives torchrun's own order back: the head, at the
    higher address, is torch's group 1 (what this change fixes)."""
    members = highest_first(nodes, 2)
    run, job = run_ranks_job(cli, nodes, members, workdir, "--env", "TSUBMIT_RANK_ORDER=off")
    assert run.code == 0, run.output
    head = [r for r in reports(cli.ok("logs", job, "--all").stdout) if r["NODE_RANK"] == "0"]
    assert {r["GROUP_RANK"] for r in head} == {"1"}


def test_each_workers_lines_carry_its_rank_as_they_are_printed_and_logs_picks_one(cli, nodes, workdir):
    """Under torchrun a node's workers write one log: each line starts with the
    worker's global rank, and arrives unflushed (PYTHONUNBUFFERED is the job's
    default); `logs --worker N` shows worker N alone, whichever node it is on."""
    members = nodes.nodes[:2]
    cli.write_cluster("c", nodes, members, tsubmit_gpus=2)
    run = cli.ok("run", "-c", "c", "--workdir", str(workdir), "--", "python", "gated.py", "2", "0", "go")
    job = job_id_of(run)
    try:
        expected = {f"[worker {worker}] {text} of worker {worker}" for worker in range(4)
                    for text in ("line 0", "line 1")}
        expected |= {f"[worker {worker}] to stderr from worker {worker}" for worker in range(4)}
        def logged():
            return [log_of(node, job, rank) for rank, node in enumerate(members)]

        eventually(lambda: expected <= {line for log in logged() for line in log.splitlines()},
                   timeout=120, message="two lines and a stderr line of every worker in the logs",
                   detail=logged)
        third = cli.ok("logs", job, "--worker", "3").stdout.splitlines()
        assert sorted(third) == ["line 0 of worker 3", "line 1 of worker 3", "to stderr from worker 3"]
        for node in members:
            (node.remote_root / job / "workdir" / "go").touch()
        eventually(lambda: cli.job(job)["state"] == "succeeded", message="the job succeeded")
        first = cli.ok("logs", job, "--worker", "0").stdout.splitlines()
        assert first[-2:] == ["line 2 of worker 0", "line 3 of worker 0"]
        assert cli.ok("logs", job, "--worker", "2", "--tail", "1").stdout == "line 3 of worker 2\n"
        missing = cli.ok("logs", job, "--worker", "4")
        assert missing.stdout == "" and "no line of worker 4" in missing.stderr
    finally:
        cli("stop", job, "--grace", "2")


def listening(pid: int) -> list[str]:
    """The local addresses (ADDRESS:PORT) process PID listens on, as ss reads them."""
    lines = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split()[3] for line in lines if f"pid={pid}," in line]


def test_the_rendezvous_store_listens_on_the_rendezvous_address_only(cli, nodes, workdir):
    """torch's c10d store takes anyone who connects: torchrun on the head served it on
    every interface (issue 26, item 19); now on the rendezvous address alone."""
    members = nodes.nodes[:2]
    head = members[0]
    cli.write_cluster("c", nodes, members, tsubmit_gpus=1)
    run = cli.ok("run", "-c", "c", "--workdir", str(workdir), "--", "python", "gated.py", "1", "0", "go")
    job = job_id_of(run)
    try:
        eventually(lambda: all("line 0 of worker" in log_of(node, job, rank)
                               for rank, node in enumerate(members)), timeout=120,
                   message="'line 0 of worker' in both ranks' logs")
        agents = [int(line.split()[0]) for line in subprocess.run(
            ["ps", "-eo", "pid,args", "ww"], capture_output=True, text=True, check=True).stdout.splitlines()
            if f"--rdzv-id={job}" in line and "is_host=1" in line and "torchrun" in line]
        assert len(agents) == 1, agents
        endpoint = re.search(r"--rdzv-endpoint=(\S+)", (Path("/proc") / str(agents[0]) / "cmdline")
                             .read_text().replace("\0", " ")).group(1)
        assert endpoint.startswith(f"{head.address}:")
        assert endpoint in listening(agents[0]), listening(agents[0])
        assert not [address for address in listening(agents[0])
                    if address.rsplit(":", 1)[1] == endpoint.rsplit(":", 1)[1] and address != endpoint]
    finally:
        for node in members:
            (node.remote_root / job / "workdir" / "go").touch()
        cli("stop", job, "--grace", "2")
