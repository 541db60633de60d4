"""Post-mortems (tsubmit/jobs/postmortem.py, the postmortem role) on real sshd nodes:
py-spy from PyPI in the nodes' interpreter (the main venv's) attaches as the
nodes' test user to its own processes; one node is told py-spy is elsewhere and
gets the /proc fallback."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.harness import eventually
from tests.harness.accounts import DEFAULT_USER, ensure_test_user, run_as
from tests.harness.jobs import job_id_of, job_processes

pytestmark = pytest.mark.e2e

NO_PY_SPY = "/nonexistent/py-spy"
OTHER_USER = "tsubmit-test2"  # scripts/setup-ssh-nodes.sh's second user


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
        eventually(lambda: [r["state"] for r in cli.job(job_id)["ranks"]] == ["running"] * 3,
                   timeout=120, message="the three ranks running")
        nodes.stop_node(node3)  # a partition: its rank keeps running
        gate.touch()
        eventually(lambda: cli.job(job_id)["state"] == "failed", timeout=120, message="the job failed")
        shown = cli.ok("postmortem", job_id).stdout
        assert "rank 1 on node2: failed (exit 7)" in shown
        assert "in wait_for_peers (stuck_unless.py:" in shown.splitlines()[2], shown  # rank 0
        assert f"rank 2 on {node3.name}: unreachable; nothing from {node3.name}: " in shown, shown
    finally:
        nodes.start_node(node3)
        shutil.rmtree(gate_dir)
        cli("stop", job_id, "--grace", "3")
    assert job_processes(job_id) == []


def test_a_rank_process_of_another_user_yields_its_state_and_says_why_it_has_no_stack(tmp_path):
    """The node-side script run directly as the nodes' test user: a rank whose process
    belongs to another user cannot be made through tsubmit without sudo, so its pid file
    is written by hand, naming a real Python process of the second test user."""
    other = ensure_test_user(OTHER_USER)
    ensure_test_user(DEFAULT_USER)
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        folder.chmod(0o755)
        for script in ("roles/postmortem/files/postmortem.py", "roles/node_lib/files/tsubmit_procs.py"):
            shutil.copy(REPO / script, folder)
        attempt = folder / "job" / "rank-0" / "attempt-1"
        attempt.mkdir(parents=True)
        (attempt / "output.log").write_text("step 1\nstep 2\n")
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                   user=other.pw_uid, group=other.pw_gid, extra_groups=[], cwd="/")
        try:
            eventually(lambda: Path(f"/proc/{sleeper.pid}").stat().st_uid == other.pw_uid, timeout=30,
                       message=f"{sleeper.pid} running as {OTHER_USER}")
            ticks = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
            (attempt / "pid").write_text(f"{sleeper.pid} {ticks} 0\n")
            for path in folder.rglob("*"):
                path.chmod(0o755)
            ranks = json.dumps([{"key": "0", "dir": "job/rank-0/attempt-1", "marker": "job.0.1", "lines": 1}])
            ran = run_as(DEFAULT_USER, [sys.executable, str(folder / "postmortem.py"), str(folder), ranks,
                                        NO_PY_SPY])
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        shutil.rmtree(folder)
    report = json.loads(ran.stdout)
    rank = report["ranks"]["0"]
    assert rank["log"] == ["step 2"]
    [process] = rank["processes"]
    assert process["pid"] == sleeper.pid and process["user"] == other.pw_name
    assert process["state"] == "S" and process["wchan"] and process["python"] and "py_spy" not in process
    assert (f"Python stack: the process belongs to {other.pw_name}, not {DEFAULT_USER}, so py-spy "
            "may not attach to it") in process["missing"], process


def test_py_spy_installed_by_the_job_s_setup_gives_the_stacks(cli, nodes, workdir):
    """py-spy from PyPI, installed by the job's --setup into the setup's venv, on
    nodes whose tsubmit_python (the system's) has none beside it nor on PATH."""
    system_python = "/usr/bin/python3"
    assert not (Path(system_python).parent / "py-spy").exists() and not shutil.which("py-spy")
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_python=system_python)
    setup = ('python3 -m venv "$TSUBMIT_SETUP_DIR/venv" && '
             '"$TSUBMIT_SETUP_DIR/venv/bin/pip" install --quiet --disable-pip-version-check py-spy')
    run = cli("run", "-c", "c", "--executor", "distributed", "--setup", setup, "--wait", "--workdir",
              str(workdir), "--", "python", "stuck_unless.py", "1", "7", timeout=600)
    assert run.code == 1, run.output
    job_id = job_id_of(run)
    assert job_processes(job_id) == []
    node1 = nodes.nodes[0]
    setup_dir = (node1.remote_root / job_id / "rank-0" / "attempt-1" / "setup").read_text().strip()
    rank0 = cli.ok("postmortem", job_id, "-o", "json").json()["ranks"][0]
    [python0] = [p for p in rank0["processes"] if p["cmdline"] == "python stuck_unless.py 1 7"]
    assert "wait_for_peers (stuck_unless.py:" in python0.get("py_spy", ""), python0
    assert rank0["py_spy"] == f"{setup_dir}/venv/bin/py-spy"
    shown = cli.ok("postmortem", job_id).stdout
    assert (f"rank 0 on {node1.name}: running; pid {python0['pid']} in wait_for_peers (stuck_unless.py:"
            in shown), shown
