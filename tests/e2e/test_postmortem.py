"""Post-mortems (tsubmit/postmortem.py, the postmortem role) on real sshd nodes:
py-spy from PyPI in the nodes' interpreter (the main venv's) attaches as the
nodes' test user to its own processes; one node is told py-spy is elsewhere and
gets the /proc fallback."""

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_faults import job_id_of, job_processes
from tests.e2e.test_lifecycle import wait_until

pytestmark = pytest.mark.e2e

NO_PY_SPY = "/nonexistent/py-spy"


def test_a_failed_job_s_post_mortem_names_where_the_other_ranks_stood(cli, nodes, workdir):
    path = cli.write_cluster("c", nodes, nodes.nodes)
    inventory = yaml.safe_load(path.read_text())
    node3 = nodes.nodes[2]
    # The third node is told py-spy is somewhere it is not: its stacks come from /proc.
    inventory["all"]["hosts"][node3.name]["tsubmit_py_spy"] = NO_PY_SPY
    path.write_text(yaml.safe_dump(inventory))
    run = cli("run", "-c", "c", "--name", "stuck", "--wait", "--workdir", str(workdir), "--",
              "python", "stuck_unless.py", "1", "7")
    assert run.code == 1, run.output
    job_id = job_id_of(run)
    assert job_processes(job_id) == []  # stopped after the post-mortem was taken

    shown = cli.ok("postmortem", job_id).stdout
    lines = shown.splitlines()
    node1, node2 = nodes.nodes[0], nodes.nodes[1]
    summary = "\n".join(lines[:6])
    assert f"rank 1 on {node2.name}: failed (exit 7)" in summary, shown
    assert f"rank 0 on {node1.name}: running; pid " in summary
    assert "in wait_for_peers (stuck_unless.py:" in summary, shown
    assert f"rank 2 on {node3.name}: running; pid " in summary and "state S, wchan " in summary
    assert "rank 1: giving up with 7" in shown  # the failed rank's log
    assert f"py-spy not found: tsubmit_py_spy is {NO_PY_SPY}" in shown
    assert "no process of the rank was left" in shown  # rank 1 had ended

    report = cli.ok("postmortem", job_id, "-o", "json").json()
    assert report["attempt"] == 1 and report["reason"] == "failed"
    rank0, rank1, rank2 = report["ranks"]
    [python0] = [p for p in rank0["processes"] if p["cmdline"] == "python stuck_unless.py 1 7"]
    assert "wait_for_peers (stuck_unless.py:" in python0["py_spy"]
    assert rank0["log"][-1].endswith("rank 0 up")
    [python2] = [p for p in rank2["processes"] if p["cmdline"] == "python stuck_unless.py 1 7"]
    assert "py_spy" not in python2 and python2["wchan"] and python2["state"] == "S"
    assert rank1["processes"] == []


def test_postmortem_of_a_job_without_one_and_a_bad_attempt_are_refused(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli.ok("run", "-c", "c", "--wait", "--workdir", str(workdir), "--", "python", "-c", "pass")
    job_id = job_id_of(run)
    none = cli("postmortem", job_id)
    assert none.code == 2 and f"job {job_id} has no post-mortem of attempt 1" in none.stderr
    bad = cli("postmortem", job_id, "--attempt", "2")
    assert bad.code == 2 and "--attempt must be between 1 and 1" in bad.stderr


def test_a_node_gone_when_the_job_fails_is_named_in_the_post_mortem(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes)
    gate_dir = Path(tempfile.mkdtemp(dir="/dev/shm"))
    gate_dir.chmod(0o755)
    gate = gate_dir / "fail-now"
    job_id = job_id_of(cli.ok("run", "-c", "c", "--executor", "distributed", "--workdir", str(workdir),
                              "--", "python", "stuck_unless.py", "1", "7", str(gate)))
    node3 = nodes.nodes[2]
    try:
        assert wait_until(lambda: [r["state"] for r in cli.job(job_id)["ranks"]] == ["running"] * 3,
                          timeout=120)
        nodes.stop_node(node3)  # a partition: its rank keeps running
        gate.touch()
        assert wait_until(lambda: cli.job(job_id)["state"] == "failed", timeout=120)
        shown = cli.ok("postmortem", job_id).stdout
        assert "rank 1 on node2: failed (exit 7)" in shown
        assert "in wait_for_peers (stuck_unless.py:" in shown.splitlines()[2], shown  # rank 0
        assert f"rank 2 on {node3.name}: unreachable; nothing from {node3.name}: " in shown, shown
    finally:
        nodes.start_node(node3)
        shutil.rmtree(gate_dir)
        cli("stop", job_id, "--grace", "3")
    assert job_processes(job_id) == []
