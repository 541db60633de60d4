"""Lost nodes on real sshd nodes: a node lost for real (its sshd and every
connection to it gone, its rank's processes killed) is noticed by the watcher
once silent past --node-timeout, and the job's next attempt runs on a spare,
or on fewer nodes with --min-nodes, or the job fails naming the node. What
each rank saw comes from its own output; what runs where is counted from
/proc, never from tsubmit's word."""

import pytest

from tests.harness import eventually
from tests.harness.jobs import attempt_runs, job_processes, stop_and_count, watch_until
from tests.harness.lost_nodes import launch, report

pytestmark = pytest.mark.e2e

def test_a_lost_node_s_rank_goes_to_a_spare_with_its_node_rank_and_world_size(cli, nodes, workdir, lost):
    head, worker, spare = nodes.nodes
    job_id = launch(cli, nodes, [head, worker], [spare], workdir)
    lost(worker)
    job = watch_until(cli, lambda: attempt_runs(cli, job_id, 2, [head.name, spare.name]), "on the spare")
    assert job["attempts"][0]["cause"] == f"lost node {worker.name}"
    eventually(lambda: report(spare, job_id, 1, 2), timeout=120, message="the spare's rank reporting")
    [seen] = report(spare, job_id, 1, 2)
    assert (seen["NODE_RANK"], seen["WORLD_SIZE"], seen["MASTER_ADDR"], seen["TSUBMIT_ATTEMPT"]) == (
        "1", "2", head.address, "2")
    assert nodes.processes_of(worker, "report_and_sleep") == []  # lost with it
    assert len(nodes.processes_of(head, r"^python report_and_sleep")) == 1  # attempt 2's only
    stop_and_count(cli, job_id)


@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_without_a_spare_min_nodes_goes_on_with_the_survivors_and_a_smaller_world(cli, nodes, workdir, lost,
                                                                                  executor):
    head, worker, last = nodes.nodes
    job_id = launch(cli, nodes, [head, worker, last], [], workdir, "--min-nodes", "2", executor=executor)
    if executor == "torchrun":  # elastic: --nnodes=2:3, every node of the three in one world
        assert report(last, job_id, 2, 1)[0]["WORLD_SIZE"] == "3"
    lost(worker)
    watch_until(cli, lambda: attempt_runs(cli, job_id, 2, [head.name, last.name]), "attempt 2 on two nodes")
    eventually(lambda: report(last, job_id, 1, 2), timeout=120, message="the renumbered rank reporting")
    [seen] = report(last, job_id, 1, 2)
    assert (seen["NODE_RANK"], seen["WORLD_SIZE"], seen["MASTER_ADDR"]) == ("1", "2", head.address)
    if executor == "torchrun":
        assert seen["RANK"] == "1"
    stop_and_count(cli, job_id)


def test_a_lost_head_moves_to_the_spare_that_takes_rank_0(cli, nodes, workdir, lost):
    head, worker, spare = nodes.nodes
    job_id = launch(cli, nodes, [head, worker], [spare], workdir)
    lost(head)
    job = watch_until(cli, lambda: attempt_runs(cli, job_id, 2, [spare.name, worker.name]), "a new head")
    assert f"{spare.name} holds rank 0, so it is the head" in cli.ok("status", job_id).stdout
    assert job["ranks"][0]["address"] == spare.address
    eventually(lambda: report(worker, job_id, 1, 2), timeout=120, message="rank 1 of attempt 2 reporting")
    [seen] = report(worker, job_id, 1, 2)
    assert (seen["NODE_RANK"], seen["WORLD_SIZE"], seen["MASTER_ADDR"]) == ("1", "2", spare.address)
    stop_and_count(cli, job_id)


def test_below_min_nodes_without_a_spare_the_job_fails_naming_the_lost_node(cli, nodes, workdir, lost):
    head, worker, _ = nodes.nodes
    job_id = launch(cli, nodes, [head, worker], [], workdir)
    lost(worker)
    job = watch_until(cli, lambda: (lambda j: j if j["state"] == "failed" else None)(cli.job(job_id)),
                      "the job failed")
    assert f"lost node {worker.name}: no free spare is left to take its rank" in job["message"]
    assert job["attempt"] == 1
    assert job_processes(job_id) == []  # the survivor's rank stopped, the lost one's died with its node


def test_a_lost_node_that_comes_back_has_its_old_rank_stopped_by_the_next_pass(cli, nodes, workdir, lost):
    head, worker, spare = nodes.nodes
    job_id = launch(cli, nodes, [head, worker], [spare], workdir)
    lost(worker, kill_processes=False)  # behind a cut cable: its rank runs on, unseen
    watch_until(cli, lambda: attempt_runs(cli, job_id, 2, [head.name, spare.name]), "attempt 2 on the spare")
    nodes.start_node(worker)
    assert len(nodes.processes_of(worker, r"^python report_and_sleep")) == 1  # attempt 1's rank 1, still
    watch_until(cli, lambda: not nodes.processes_of(worker, "report_and_sleep"), "the old rank stopped")
    job = cli.job(job_id)
    assert (job["attempt"], [r["host"] for r in job["ranks"]]) == (2, [head.name, spare.name]), job

    assert all(r["state"] == "running" for r in job["ranks"])  # not used by the running attempt
    assert len(nodes.processes_of(head, r"^python report_and_sleep")) == 1
    assert len(nodes.processes_of(spare, r"^python report_and_sleep")) == 1
    stop_and_count(cli, job_id)


def test_delete_removes_the_job_from_a_lost_node_too(cli, nodes, workdir, lost):
    head, worker, spare = nodes.nodes
    job_id = launch(cli, nodes, [head, worker], [spare], workdir)
    lost(worker)
    watch_until(cli, lambda: attempt_runs(cli, job_id, 2, [head.name, spare.name]), "attempt 2 on the spare")
    nodes.start_node(worker)
    assert (worker.remote_root / job_id).exists()  # attempt 1's folder, on the node it was lost with
    cli.ok("delete", "--yes", job_id)
    assert [node.name for node in nodes.nodes if (node.remote_root / job_id).exists()] == []
    assert job_processes(job_id) == []
