"""Logs that outlive the node (tsubmit/local/kept_logs.py) on real sshd nodes: a rank
whose node is lost while it runs, and ranks stopped because another failed,
are read from the copy kept on the controller once their node is gone."""

import re

import pytest

from tests.harness import eventually
from tests.harness.jobs import distributed, job_id_of, job_processes

pytestmark = pytest.mark.e2e

# Rank 0 prints a line and, with a code, exits with it after a second; the
# other ranks print a tick every half second until they are stopped.
TICKS = """import os, sys, time
rank = int(os.environ["NODE_RANK"])
print(f"node {rank} starts", flush=True)
if rank == 0 and int(sys.argv[1]):
    time.sleep(1)
    sys.exit(int(sys.argv[1]))
for tick in range(3600):
    print(f"node {rank} tick {tick}", flush=True)
    time.sleep(0.5)
"""


def copy_said(cli, job_id: str, rank: int) -> str:
    path = cli.home / "state" / "logs" / job_id / f"rank-{rank}" / "attempt-1.log"
    return path.read_text() if path.exists() else ""


def test_a_running_rank_whose_node_is_lost_shows_the_copy_the_watcher_kept(cli, nodes, workdir,
                                                                         webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = distributed(cli, "c", workdir, "python", "-c", TICKS, "0",
                         extra=("--notify", webhook.url, "--notify-on", "failed"))  # watched
    worker = nodes.nodes[1]
    try:
        # the watcher's passes bring the running rank's new lines
        eventually(lambda: cli.ok("watch", "--once") and "node 1 tick 3\n" in copy_said(cli, job_id, 1),
                   timeout=120, message="'node 1 tick 3' in the copy the watcher keeps",
                   detail=lambda: copy_said(cli, job_id, 1))
        nodes.stop_node(worker)  # its rank runs on, unseen: a network partition
        shown = cli("logs", job_id, "--rank", "1")
        assert shown.code == 0, shown.output
        assert shown.stdout.startswith("node 1 starts\nnode 1 tick 0\nnode 1 tick 1\nnode 1 tick 2\n")
        said = (rf"{worker.name} does not answer; rank 1's log is the copy kept on this machine at "
                r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(its last MiB as it stood then\)")
        assert re.search(said, shown.stderr), shown.stderr
        failed = cli("logs", job_id, "--rank", "0", "--attempt", "1")
        assert failed.code == 0 and failed.stdout.startswith("node 0 starts\n")  # node1 answers: its own
    finally:
        nodes.start_node(worker)
        cli("stop", job_id)
    assert job_processes(job_id) == []


def test_ranks_stopped_because_another_failed_keep_the_end_of_their_logs(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes)
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
              "--", "python", "-c", TICKS, "5")
    assert run.code == 1, run.output
    job_id = job_id_of(run)
    assert job_processes(job_id) == []
    assert [rank["state"] for rank in cli.job(job_id)["ranks"]] == ["failed", "stopped", "stopped"]
    lost = nodes.nodes[2]
    nodes.stop_node(lost)
    try:
        shown = cli("logs", job_id, "--rank", "2")
        assert shown.code == 0, shown.output
        assert shown.stdout.startswith("node 2 starts\nnode 2 tick 0\n")
        assert f"{lost.name} does not answer; rank 2's log is the copy kept" in shown.stderr
    finally:
        nodes.start_node(lost)


def test_a_rank_whose_log_is_long_is_seen_ending_and_its_last_mib_kept(cli, nodes, workdir):
    """A node's answer of more than 700,000 characters, which ansible-runner
    empties by default: the rank was never seen ending, `logs` showed nothing."""
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    line = "z" * 99
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir), "--",
              "python", "-c", f"for i in range(12000): print(f'{{i:05d}} {line}')", timeout=240)
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    shown = cli.ok("logs", job_id).stdout.splitlines()
    assert len(shown) == 12000 and shown[-1] == f"11999 {line}"
    assert cli.ok("logs", job_id, "--tail", "2").stdout == f"11998 {line}\n11999 {line}\n"
    assert cli.ok("logs", job_id, "--tail", "0").stdout == ""
    kept = copy_said(cli, job_id, 0).splitlines()[1:]  # under its header
    assert kept[-1] == f"11999 {line}" and len(kept) == 1024 * 1024 // 106  # its last MiB, whole lines
    assert kept[0] == f"{12000 - len(kept):05d} {line}"


def test_a_restart_is_notified_with_its_cause_and_the_ended_attempt_s_logs_are_kept(cli, nodes, workdir,
                                                                                 webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "distributed", "--restarts", "1", "--wait", "--notify",
              webhook.url, "--workdir", str(workdir), "--", "python", "fail_until.py", "1", "3", "1")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    worker = nodes.nodes[1]
    cause = f"rank 1 on {worker.name} exited with 3"
    eventually(lambda: len(webhook.bodies) == 2, timeout=30, message="two messages posted",
               detail=lambda: webhook.bodies)
    restarted, succeeded = webhook.bodies
    name = cli.job(job_id)["name"]
    assert restarted["title"] == f"tsubmit: job {name} ({job_id}) restarted as attempt 2 after {cause}"
    assert "state: restarted\nattempt: 2\n" in restarted["message"]
    assert restarted["message"].endswith(f"cause: {cause}\nrestarts: 1 of 1")
    assert succeeded["title"].endswith(" succeeded") and "attempt: 2" in succeeded["message"]
    nodes.stop_node(worker)
    try:
        for attempt in ("1", "2"):
            shown = cli("logs", job_id, "--rank", "1", "--attempt", attempt)
            assert shown.code == 0 and f'"attempt": {attempt}' in shown.stdout, shown.output
            assert "is the copy kept on this machine" in shown.stderr
    finally:
        nodes.start_node(worker)
