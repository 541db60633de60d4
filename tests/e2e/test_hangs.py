"""Hung ranks (`--hang-timeout`) on real sshd nodes: a rank whose process lives but
whose log stopped growing is found by a watcher, its post-mortem taken before
anything is stopped, and the attempt ended; a rank that keeps printing is never hung."""

import pytest

from tests.harness import eventually
from tests.harness.jobs import job_id_of, job_processes, start

pytestmark = pytest.mark.e2e

HANG_TIMEOUT = "20s"


def ranks_running(cli, job_id: str, count: int) -> bool:
    return [rank["state"] for rank in cli.job(job_id)["ranks"]] == ["running"] * count


def test_a_watch_pass_ends_a_job_whose_rank_hung_after_its_post_mortem(cli, nodes, workdir,
                                                                      webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    node2 = nodes.nodes[1]
    # rank 1 prints, then blocks with its process alive; rank 0 prints on, never hung
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--hang-timeout", HANG_TIMEOUT,
                   "--notify", webhook.url, "--workdir", str(workdir), "--",
                   "python", "hang_on_rank.py", "1", "100000")
    try:
        eventually(lambda: ranks_running(cli, job_id, 2), timeout=120, message="both ranks running")
        said = []
        eventually(lambda: said.append(cli.ok("watch", "--once").stdout) or said[-1], timeout=180,
                   interval=1, message="a watch pass acting on the hung rank")
        assert job_processes(job_id) == []  # the pass stopped every rank: counted from /proc
        job = cli.job(job_id)
    finally:
        cli("stop", job_id, "--grace", "3")
    assert f"job {job_id} (" in said[-1], said
    assert f") has failed: hung: rank 1 on {node2.name}, no output for " in said[-1], said
    assert job["state"] == "failed", job
    assert job["message"].startswith(f"hung: rank 1 on {node2.name}, no output for "), job["message"]
    assert [attempt["cause"] for attempt in job["attempts"]] == [job["message"]]
    assert {rank["state"] for rank in job["ranks"]} == {"stopped"}

    report = cli.ok("postmortem", job_id, "-o", "json").json()
    assert report["reason"] == "hang"
    rank0, rank1 = report["ranks"]
    assert rank1["hung_for"] >= 20 and "hung_for" not in rank0
    [python1] = [p for p in rank1["processes"] if p["cmdline"].startswith("python hang_on_rank.py")]
    assert "stuck_in_collective (hang_on_rank.py:" in python1["py_spy"]  # taken before the stop
    assert rank1["log"][-1].endswith("rank 1 waits for its peers")
    shown = cli.ok("postmortem", job_id).stdout.splitlines()
    assert "taken when it hung" in shown[0]
    assert shown[3].startswith(f"rank 1 on {node2.name}: running, hung: no output for "), shown
    assert "in stuck_in_collective (hang_on_rank.py:" in shown[3], shown

    # The hang's message names the rank whose log stopped and where its stack stands; then the end.
    # (sent at once, each in a thread of its own: in either order)
    [hang] = [body for body in webhook.bodies if f"({job_id}) hung" in body["title"]]
    [end] = [body for body in webhook.bodies if f"({job_id}) failed" in body["title"]]
    assert hang["title"].endswith(f"({job_id}) hung: rank 1: log silent for 20s (--hang-timeout)"), hang
    assert f"rank 1 on {node2.name}: running, hung: no output for " in hang["message"], hang
    assert "in stuck_in_collective (hang_on_rank.py:" in hang["message"], hang
    assert f"rank 0 on {nodes.nodes[0].name}" not in hang["message"], hang  # it kept printing
    assert end["title"].endswith(f"({job_id}) failed: {job['message']}"), end


def test_run_wait_restarts_a_job_whose_rank_hung(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    node2 = nodes.nodes[1]
    # Attempt 1: rank 1 hangs (rank 0 prints for 9 s and ends); attempt 2: both print for 9 s and end.
    run = cli("run", "-c", "c", "--executor", "distributed", "--hang-timeout", HANG_TIMEOUT,
              "--restarts", "1", "--wait", "--workdir", str(workdir), "--",
              "python", "hang_on_rank.py", "1", "30")
    job_id = job_id_of(run)
    try:
        assert run.code == 0, run.output
        assert job_processes(job_id) == []  # neither attempt left anything running
        job = cli.job(job_id)
    finally:
        cli("stop", job_id, "--grace", "3")
    assert job["state"] == "succeeded" and job["attempt"] == 2, job
    first = job["attempts"][0]
    assert first["cause"].startswith(f"hung: rank 1 on {node2.name}, no output for "), first
    report = cli.ok("postmortem", job_id, "--attempt", "1", "-o", "json").json()
    assert report["reason"] == "hang" and report["ranks"][1]["hung_for"] >= 20
    [python1] = [p for p in report["ranks"][1]["processes"] if p["cmdline"].startswith("python hang_on_rank")]
    assert "stuck_in_collective (hang_on_rank.py:" in python1["py_spy"]
    assert "rank 1 tick 29" in cli.ok("logs", job_id, "--rank", "1").stdout  # attempt 2 ran to its end


def test_a_rank_that_keeps_printing_is_never_hung(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    # Every rank prints every 0.3 s for 15 s, longer than the hang timeout, then succeeds.
    run = cli("run", "-c", "c", "--executor", "distributed", "--hang-timeout", "10s", "--wait",
              "--workdir", str(workdir), "--", "python", "hang_on_rank.py", "-1", "50")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    assert cli.job(job_id)["state"] == "succeeded"
    assert cli("postmortem", job_id).code == 2  # none was taken
