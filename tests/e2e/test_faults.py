"""What tsubmit says is what runs, under the faults a user meets: a rank that
fails while others run, a node down during stop or restart, processes that
leave their rank's process group, Ctrl-C during a submit, `list` racing
`run`, a broken store. What is left on the nodes is counted from /proc by the
job's marker in the processes' environment, never from tsubmit's word."""

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TSUBMIT
from tests.harness import eventually
from tests.harness.jobs import attempt_dir, distributed, job_id_of, job_processes, start
from tests.harness.processes import catches, stderr_reader

pytestmark = pytest.mark.e2e

SLEEP_UNLESS_RANK_1 = ("import os, sys, time; print('up', flush=True); "
                       "sys.exit(1) if os.environ['NODE_RANK'] == '1' else time.sleep(300)")


def sleeping_on_two_nodes(cli, nodes, workdir):
    """A sleeper.py job on the first two nodes, every rank's processes up: (job id, the worker node)."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = distributed(cli, "c", workdir, "python", "sleeper.py")
    eventually(lambda: len(job_processes(job_id)) >= 4, message="torchrun and a worker on each node")
    return job_id, nodes.nodes[1]


# ---------------------------------------------------------------- a failed rank


def test_a_failed_rank_stops_the_other_ranks(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes)
    started = time.monotonic()
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
              "--", "python", "-c", SLEEP_UNLESS_RANK_1)
    assert run.code == 1, run.output
    assert time.monotonic() - started < 120  # not the 300 s the other ranks sleep
    job_id = job_id_of(run)
    assert job_processes(job_id) == []
    job = cli.job(job_id)
    assert job["state"] == "failed"
    assert job["message"].startswith("rank 1 on node2 exited with 1")
    assert [r["state"] for r in job["ranks"]] == ["stopped", "failed", "stopped"]


def test_keep_going_leaves_the_others_running_and_stop_still_stops_them(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes)
    job_id = distributed(cli, "c", workdir, "python", "-c", SLEEP_UNLESS_RANK_1, extra=["--keep-going"])
    eventually(lambda: cli.job(job_id)["ranks"][1]["state"] == "failed", message="rank 1 failed")
    status = cli.ok("status", job_id).stdout
    assert f"job {job_id}" in status and "failed (2 ranks still running)" in status
    assert len(job_processes(job_id)) >= 2
    # Refreshed again although failed: it still has live ranks.
    assert [r["state"] for r in cli.job(job_id)["ranks"]] == ["running", "failed", "running"]

    stop = cli.ok("stop", job_id, "--grace", "5")
    assert "stopped; 0 processes left" in stop.stdout
    assert job_processes(job_id) == []
    job = cli.job(job_id)
    assert job["state"] == "failed"
    assert [r["state"] for r in job["ranks"]] == ["stopped", "failed", "stopped"]
    assert "nothing of it was running" in cli.ok("stop", job_id).stdout


def test_env_path_emptied_fails_with_127_instead_of_losing_the_rank(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--env", "PATH=",
              "--env", "IFS=x", "--workdir", str(workdir), "--", "python", "-c", "print(1)")
    assert run.code == 1, run.output
    [rank] = cli.job(job_id_of(run))["ranks"]
    assert (rank["state"], rank["exit_code"]) == ("failed", 127)


# ---------------------------------------------------------------- containment


def test_stop_reaches_a_daemon_that_left_the_ranks_session(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = distributed(cli, "c", workdir, "python", "daemonize.py")
    eventually(lambda: sum("sleep 600" in p for p in job_processes(job_id)) == 2,
               message="both daemonized 'sleep 600's", detail=lambda: job_processes(job_id))
    stop = cli.ok("stop", job_id, "--grace", "3")
    assert "0 processes left" in stop.stdout
    assert job_processes(job_id) == []
    assert cli.job(job_id)["state"] == "stopped"


def test_stop_kills_torchrun_workers_that_ignore_sigterm(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1], tsubmit_gpus=2)
    job_id = start(cli, "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py",
                   "--ignore-term")
    eventually(lambda: sum("sleeper.py" in p for p in job_processes(job_id)) >= 3,
               message="torchrun and its two sleeper.py workers", detail=lambda: job_processes(job_id))
    cli.ok("stop", job_id, "--grace", "3")
    assert job_processes(job_id) == []
    assert cli.job(job_id)["state"] == "stopped"


LEAVE_BEHIND = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import pathlib, signal, time; "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path('ready').touch(); "
                  "time.sleep(600)"], start_new_session=True, cwd=os.environ['NODE_RANK'])
while not os.path.exists(os.path.join(os.environ['NODE_RANK'], 'ready')):
    time.sleep(0.05)
print('main ends; a grandchild that ignores SIGTERM goes on', flush=True)
"""


def test_what_a_rank_left_running_is_stopped_when_it_ends_and_counted(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    (workdir / "leave_behind.py").write_text(LEAVE_BEHIND)
    for rank in ("0", "1"):
        (workdir / rank).mkdir()
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "leaves", "--wait",
              "--workdir", str(workdir), "--", "python", "leave_behind.py")
    job = cli.job("leaves")
    try:
        assert run.code == 0, run.output
        assert job_processes(job["id"]) == []
        assert job["state"] == "succeeded"
        assert [(r["state"], r["leftovers"]) for r in job["ranks"]] == [("succeeded", 1)] * 2
        assert "succeeded (1 left running, stopped)" in cli.ok("status", "leaves").stdout
    finally:
        cli.ok("stop", job["id"], "--grace", "1")
    assert job_processes(job["id"]) == []


def torchrun_killed(cli, nodes, workdir) -> str:
    """A torchrun job on two nodes whose torchrun on node1 was killed with -9:
    its two workers, in sessions of their own, go on without it."""
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_gpus=2)
    job_id = start(cli, "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py")
    eventually(lambda: sum("sleeper.py" in p for p in job_processes(job_id)) >= 6,
               message="6 sleeper.py processes of the job", detail=lambda: job_processes(job_id))
    node1 = f"TSUBMIT_RANK_MARKER={job_id}.r0."
    [torchrun] = [int(p.split()[0]) for p in job_processes(job_id) if "torchrun" in p
                  and node1 in Path(f"/proc/{p.split()[0]}/environ").read_text(errors="replace")]
    os.kill(torchrun, signal.SIGKILL)
    eventually(lambda: not Path(f"/proc/{torchrun}").exists(), message=f"torchrun {torchrun} gone")
    return job_id


def test_the_workers_of_a_killed_torchrun_are_stopped_with_the_failed_job(cli, nodes, workdir):
    job_id = torchrun_killed(cli, nodes, workdir)
    job = cli.job(job_id)  # rank 0 failed (137): the job failed, and all of it is stopped
    assert job["state"] == "failed" and job["ranks"][0]["exit_code"] == 137
    assert job_processes(job_id) == []


def test_delete_stops_the_workers_of_a_killed_torchrun(cli, nodes, workdir):
    job_id = torchrun_killed(cli, nodes, workdir)
    cli.ok("delete", job_id, "--yes")
    assert job_processes(job_id) == []


# ---------------------------------------------------------------- nodes down


def test_a_stop_that_could_not_reach_a_node_is_finished_when_it_answers(cli, nodes, workdir):
    job_id, worker = sleeping_on_two_nodes(cli, nodes, workdir)
    nodes.stop_node(worker)  # a partition: its rank keeps running
    try:
        stop = cli("stop", job_id, "--grace", "3")
        assert stop.code == 3, stop.output
        assert "node2" in stop.stderr and "pending" in stop.stderr
        assert any(worker.marker in Path(f"/proc/{p.split()[0]}/environ").read_text(errors="replace")
                   for p in job_processes(job_id))
        job = cli.job(job_id)
        assert job["state"] == "stopping" and job["pending"]["hosts"] == ["node2"]
        assert [r["state"] for r in job["ranks"]] == ["stopped", "unreachable"]
    finally:
        nodes.start_node(worker)
    job = cli.job(job_id)  # status finishes the stop on node2
    assert job["state"] == "stopped" and job["pending"] is None
    assert job_processes(job_id) == []


def test_a_pending_stop_survives_a_status_saved_meanwhile(cli, nodes, workdir):
    job_id, worker = sleeping_on_two_nodes(cli, nodes, workdir)
    looping = threading.Event()
    looping.set()

    def keep_asking():  # a user's `while :; do tsubmit status J; done`
        while looping.is_set():
            cli("status", job_id)

    asker = threading.Thread(target=keep_asking)
    nodes.stop_node(worker)  # a partition: its rank keeps running
    try:
        asker.start()
        before = cli.status_runs()
        stop = cli("stop", job_id, "--grace", "3")
        assert stop.code == 3 and "node2" in stop.stderr, stop.output
        assert cli.status_runs() > before + 1  # the loop saved the job during the stop
        looping.clear()
        asker.join()
        job = cli.job(job_id)
        assert job["pending"]["action"] == "stop" and job["pending"]["hosts"] == ["node2"], job
        assert job["state"] == "stopping", job
    finally:
        looping.clear()
        if asker.is_alive():
            asker.join()
        nodes.start_node(worker)
    cli.ok("list")
    job = cli.job(job_id)
    assert job["state"] == "stopped" and job["pending"] is None, job
    assert job_processes(job_id) == []


def test_a_delete_pending_on_a_silent_node_forgets_the_job_once_it_answers(cli, nodes, workdir):
    job_id, worker = sleeping_on_two_nodes(cli, nodes, workdir)
    nodes.stop_node(worker)
    try:
        kept = cli("delete", job_id, "--yes")
        assert kept.code == 3 and "node2" in kept.stderr, kept.output
        job = cli.job(job_id)
        assert job["message"].startswith("delete pending on node2"), job
        assert [r["state"] for r in job["ranks"]] == ["stopped", "unreachable"]
    finally:
        nodes.start_node(worker)
    assert f"job {job_id} ({job['name']}): deleted" in cli.ok("status", job_id).stdout
    assert [job["id"] for job in cli.ok("list", "-o", "json").json()] == []
    assert job_processes(job_id) == []
    assert not any((node.remote_root / job_id).exists() for node in nodes.nodes)
    assert cli("status", job_id).code == 2


def runs_since(cli, before: list[str]) -> list[str]:
    """The playbook runs (their data dirs' names: STAMP-PLAYBOOK-N) made since BEFORE."""
    return [path.name for path in sorted((cli.home / "state" / "runs").iterdir()) if path.name not in before]


def asked(cli, run: str) -> str:
    return (cli.home / "state" / "runs" / run / "inventory" / "tsubmit.yml").read_text()


def test_list_does_not_wait_on_a_node_that_did_not_answer_recently(cli, nodes, workdir):
    job_id, worker = sleeping_on_two_nodes(cli, nodes, workdir)
    nodes.stop_node(worker)
    try:
        assert cli("delete", job_id, "--yes").code == 3  # the delete stays pending on node2
        before = runs_since(cli, [])
        listed = cli.ok("list")
        made = runs_since(cli, before)
        assert not [run for run in made if "-cleanup-" in run], made
        assert not [run for run in made if "node2" in asked(cli, run)], made
        assert "delete pending on node2" in listed.stdout
        assert "node2 has not answered since" in listed.stderr and "status" in listed.stderr
        before = runs_since(cli, [])
        cli.ok("status", job_id)  # asks at once
        assert any("-cleanup-" in run and "node2" in asked(cli, run) for run in runs_since(cli, before))
    finally:
        nodes.start_node(worker)
    assert "deleted" in cli.ok("status", job_id).stdout
    assert job_processes(job_id) == []
    assert not any((node.remote_root / job_id).exists() for node in nodes.nodes)


def test_a_launch_that_failed_on_a_cut_off_node_names_it_and_is_cleaned_once_it_answers(cli, nodes,
                                                                                       workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    worker = nodes.nodes[1]
    nodes.stop_node(worker)
    try:
        run = cli("run", "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                  "python", "sleeper.py")
        assert run.code == 3 and "node2" in run.stderr, run.output
        job_id = job_id_of(run)
        for shown in (cli.ok("status", job_id).stdout, cli.ok("list").stdout, cli.job(job_id)["message"]):
            assert "None" not in shown, shown
        assert "rank 1 on node2 could not be started" in cli.job(job_id)["message"]
    finally:
        nodes.start_node(worker)
    job = cli.job(job_id)
    assert job["state"] == "failed" and job["pending"] is None, job
    assert job["message"] == "rank 1 on node2 could not be started"
    assert job_processes(job_id) == []
    assert not any((node.remote_root / job_id).exists() for node in nodes.nodes)


def test_a_node_that_dies_mid_job_fails_the_job_once_it_is_back(cli, nodes, workdir):
    job_id, worker = sleeping_on_two_nodes(cli, nodes, workdir)
    nodes.stop_node(worker, kill_processes=True)  # a crash: its rank is gone with it
    try:
        assert cli.job(job_id)["ranks"][1]["state"] == "unreachable"
    finally:
        nodes.start_node(worker)
    job = cli.job(job_id)
    assert job["state"] == "failed", job
    assert job["message"].startswith("rank 1 on node2 ended without an exit code")
    assert [r["state"] for r in job["ranks"]] == ["stopped", "lost"]
    assert job_processes(job_id) == []


def test_a_restart_that_fails_on_one_node_is_rolled_back_and_can_be_retried(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                 "--", "python", "-c", "import os; print('attempt', os.environ['TSUBMIT_ATTEMPT'])")
    job_id = job_id_of(run)
    worker = nodes.nodes[1]
    nodes.stop_node(worker)
    try:
        restart = cli("restart", job_id)
        assert restart.code == 3, restart.output
        assert "node2" in restart.stderr and "rolled back" in restart.stderr
        assert not attempt_dir(nodes.nodes[0], job_id, 0, 2).exists()
        job = cli.job(job_id)
        assert (job["state"], job["attempt"]) == ("succeeded", 1)
        assert {r["state"] for r in job["ranks"]} == {"succeeded"}
    finally:
        nodes.start_node(worker)
    cli.ok("restart", job_id)
    eventually(lambda: cli.job(job_id)["state"] == "succeeded", message="the job succeeded")
    job = cli.job(job_id)
    assert job["attempt"] == 2
    assert cli.ok("logs", job_id, "--rank", "1").stdout == "attempt 2\n"
    assert job_processes(job_id) == []


def test_delete_force_forgets_a_job_whose_node_is_gone(cli, nodes, workdir):
    job_id, worker = sleeping_on_two_nodes(cli, nodes, workdir)
    nodes.stop_node(worker, kill_processes=True)  # the machine is gone
    try:
        kept = cli("delete", job_id, "--yes")
        assert kept.code == 3 and "node2" in kept.stderr and "--force" in kept.stderr
        assert cli.job(job_id)["pending"]["action"] == "delete"
        forced = cli("delete", job_id, "--yes", "--force")
        assert forced.code == 0, forced.output
        assert "node2" in forced.stderr and f"/{job_id}" in forced.stderr
        assert cli("status", job_id).code == 2
        assert not (nodes.nodes[0].remote_root / job_id).exists()
        assert job_processes(job_id) == []
    finally:
        nodes.start_node(worker)


def test_a_job_keeps_the_connection_details_it_was_launched_with(cli, nodes, workdir):
    job_id, _ = sleeping_on_two_nodes(cli, nodes, workdir)  # on ports other than 22
    cli.ok("cluster", "remove", "c")
    assert cli.job(job_id)["state"] == "running"
    cli.ok("stop", job_id, "--grace", "2")
    cli.ok("restart", job_id)  # with the connection details it was launched with, too
    eventually(lambda: len(job_processes(job_id)) >= 4,
               message="the restart's torchrun and a worker on each node")
    cli.ok("delete", job_id, "--yes")
    assert job_processes(job_id) == []
    assert not any((node.remote_root / job_id).exists() for node in nodes.nodes)
    removed = cli.ok("gc", "--older-than", "0s", "-o", "json").json()
    assert len(removed["inventories"]) == 1  # the copy no job names any more
    assert not list((cli.home / "state" / "inventories").iterdir())


def test_run_wait_names_a_node_that_stops_answering_and_goes_on_waiting(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    waiting = subprocess.Popen([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--name",
                                "silent-node", "--wait", "--workdir", str(workdir), "--",
                                "python", "sleeper.py"],
                               env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said, reader = stderr_reader(waiting)
    worker = nodes.nodes[1]
    try:
        eventually(lambda: '"running"' in cli("status", "silent-node", "-o", "json").stdout,
                   timeout=120, message="job silent-node running")
        job_id = cli.job("silent-node")["id"]
        nodes.stop_node(worker)  # a partition: its rank keeps running
        eventually(lambda: any("no answer from node2" in line for line in said), timeout=120,
                   message="'no answer from node2' from run --wait", detail=lambda: said)
        assert waiting.poll() is None, "a silent node does not end the wait"
    finally:
        nodes.start_node(worker)
    eventually(lambda: any("answers again" in line for line in said), timeout=120,
               message="'answers again' from run --wait", detail=lambda: said)
    cli.ok("stop", job_id, "--grace", "3")
    assert waiting.wait(timeout=120) == 1
    reader.join(timeout=10)
    assert job_processes(job_id) == []


def test_gc_with_a_node_down_keeps_the_old_job_and_exits_3_naming_the_node(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = job_id_of(cli.ok("run", "-c", "c", "--executor", "distributed", "--wait",
                              "--workdir", str(workdir), "--", "python", "-c", "print('done')"))
    worker = nodes.nodes[1]
    nodes.stop_node(worker)
    try:
        kept = cli("gc", "--older-than", "0s")
        assert kept.code == 3, kept.output
        assert "node2" in kept.stderr and job_id in kept.stderr
        assert cli.job(job_id)["state"] == "succeeded", "the job stays recorded for the next gc"
    finally:
        nodes.start_node(worker)
    cli.ok("gc", "--older-than", "0s")
    assert cli("status", job_id).code == 2
    assert not (worker.remote_root / job_id).exists()


# ---------------------------------------------------------------- races and signals


def test_list_racing_several_submissions_records_them_all_running(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    stop_listing = threading.Event()

    def keep_listing():
        while not stop_listing.is_set():
            cli("list", "-o", "json")

    lister = threading.Thread(target=keep_listing)
    lister.start()
    try:
        runs = cli.at_once("run", "-c", "c", "--executor", "distributed", "--workdir", str(workdir),
                           "--", "python", "sleeper.py", count=4)
    finally:
        stop_listing.set()
        lister.join()
    assert all(run.code == 0 for run in runs), [run.output for run in runs]
    jobs = cli.ok("list", "-o", "json").json()
    assert len(jobs) == 4
    assert [job["state"] for job in jobs] == ["running"] * 4, [job["message"] for job in jobs]
    cli.ok("delete", "--all", "--yes")
    assert all(job_processes(job["id"]) == [] for job in jobs)


# When the signal comes: at once (before anything is recorded), while the
# nodes are probed, while the tree ships, and once a first rank has started.
@pytest.mark.parametrize("moment", [None, "connecting", "launching", "launched"])
def test_ctrl_c_during_a_submit_rolls_back_every_node(cli, nodes, workdir, tmp_path, moment):
    # Rank 2's node is slow: it sleeps before and after starting its rank, so
    # the signal comes while ranks have started elsewhere or are starting.
    slow = tmp_path / "slow.yml"
    slow.write_text(yaml.safe_dump([{"name": "Be a slow node", "ansible.builtin.command": "sleep 2",
                                     "changed_when": False, "when": "tsubmit_rank | int == 2"}]))
    cli.write_cluster("c", nodes, nodes.nodes, tsubmit_pre_launch_tasks=[str(slow)],
                      tsubmit_post_launch_tasks=[str(slow)])
    name = f"interrupted-{moment}"
    run = subprocess.Popen([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--name", name,
                            "--workdir", str(workdir), "--", "python", "sleeper.py"],
                           env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    if moment is None:  # as soon as tsubmit handles signals: its first line (tsubmit/__main__.py)
        eventually(lambda: catches(run.pid, signal.SIGTERM), interval=0.01,
                   message="tsubmit handling SIGTERM")
    else:  # progress lines, one per change off a terminal: "node1: launching"
        for line in run.stderr:
            seen.append(line)
            if line.split(": ")[-1].strip() == moment:
                break
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    stderr = "".join(seen) + stderr
    assert run.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    jobs = [job for job in cli.ok("list", "-o", "json").json() if job["name"] == name]
    # Once nothing runs on any node, no launch still under way can start a rank later.
    eventually(lambda: not any(nodes.processes_of(node, ".") for node in nodes.nodes), timeout=60,
               message="nothing of the launch left running on the nodes",
               detail=lambda: {node.name: nodes.processes_of(node, ".") for node in nodes.nodes})
    for job in jobs:
        assert job_processes(job["id"]) == []
        assert job["state"] == "stopped", job
        assert not any((node.remote_root / job["id"]).exists() for node in nodes.nodes)


# ---------------------------------------------------------------- the store


def store_file(cli) -> Path:
    return cli.home / "state" / "jobs.sqlite"


def test_the_state_dir_and_store_are_private_whatever_command_comes_first(cli, nodes):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    cli.ok("cluster", "check", "c")
    assert (cli.home / "state").stat().st_mode & 0o777 == 0o700
    cli.ok("list")
    assert store_file(cli).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_store_is_one_clear_line_not_a_traceback(cli, damage):
    cli.ok("list")
    store = store_file(cli)
    content = {"garbage": b"this is not a database" * 100, "truncated": store.read_bytes()[:600],
               "empty": b""}[damage]
    for leftover in (Path(f"{store}-wal"), Path(f"{store}-shm")):
        leftover.unlink(missing_ok=True)
    store.write_bytes(content)
    for command in (["list"], ["status", "x"], ["run", "--dry-run", "--", "true"]):
        result = cli(*command)
        if command[0] == "run":
            continue  # a dry run needs no store
        assert result.code == 2, result.output
        assert "Traceback" not in result.stderr
        assert str(store) in result.stderr and "mv " in result.stderr
    assert store.read_bytes() == content  # never replaced by an empty store


def test_a_locked_store_waits_a_bounded_time_and_says_so(cli):
    cli.ok("list")
    holder = sqlite3.connect(store_file(cli), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        cli.env["TSUBMIT_STORE_TIMEOUT"] = "2"
        started = time.monotonic()
        result = cli("list")
        assert 2 <= time.monotonic() - started < 30
        assert result.code == 2, result.output
        assert "waiting for the job store" in result.stderr
        assert "locked by another process" in result.stderr and str(store_file(cli)) in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    cli.ok("list")


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_store_locked_during_a_launch_is_waited_for_and_the_running_job_recorded(cli, nodes, workdir,
                                                                                   interrupted):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    cli.ok("list")
    cli.env["TSUBMIT_STORE_TIMEOUT"] = "1"
    run = subprocess.Popen([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--name", "locked",
                            "--workdir", str(workdir), "--", "python", "sleeper.py"],
                           env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    holder = sqlite3.connect(store_file(cli), isolation_level=None)
    try:
        for line in run.stderr:  # progress lines off a terminal: "node1: connecting"
            said.append(line)
            if line.split(": ")[-1].strip() == "connecting":
                break
        holder.execute("BEGIN EXCLUSIVE")  # held past the launch and the store timeout
        reader = threading.Thread(target=lambda: said.extend(run.stderr), daemon=True)
        reader.start()
        eventually(lambda: run.poll() is not None or any("as long as it takes" in line for line in said),
                   message="run waiting for the store 'as long as it takes', or its end",
                   detail=lambda: said)
        if interrupted:  # Ctrl-C while the record waits: rolled back once it is written
            run.send_signal(signal.SIGINT)
            eventually(lambda: any("interrupted" in line for line in said),
                       message="'interrupted' from run", detail=lambda: said)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    stdout = run.communicate(timeout=120)[0]
    reader.join(timeout=10)
    job = cli.job("locked")
    try:
        if interrupted:
            assert run.returncode == 130, stdout + "".join(said)
            assert job["state"] == "stopped" and job_processes(job["id"]) == []
        else:
            assert run.returncode == 0, stdout + "".join(said)
            assert job["state"] == "running" and len(job_processes(job["id"])) >= 2
            assert f"job {job['id']} (locked) running" in stdout
    finally:
        cli.ok("stop", job["id"], "--grace", "2")
    assert job_processes(job["id"]) == []


def test_a_newer_store_schema_is_refused_by_name(cli):
    cli.ok("list")
    with sqlite3.connect(store_file(cli)) as db:
        db.execute("PRAGMA user_version=99")
    result = cli("list")
    assert result.code == 2 and "newer tsubmit" in result.stderr and str(store_file(cli)) in result.stderr


def test_runner_secrets_of_a_killed_controller_are_removed_by_the_next_command(cli, nodes, workdir,
                                                                                  tmp_path):
    slow = tmp_path / "slow.yml"
    slow.write_text(yaml.safe_dump([{"name": "Be slow", "ansible.builtin.command": "sleep 5",
                                     "changed_when": False}]))
    cli.write_cluster("c", nodes, nodes.nodes[:1], tsubmit_pre_launch_tasks=[str(slow)])
    run = subprocess.Popen([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--env",
                            "SECRET=hunter2", "--workdir", str(workdir), "--", "python", "sleeper.py"],
                           env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = cli.home / "state" / "runs"
    eventually(lambda: list(runs.glob("*-submit-*/env/extravars")), timeout=60,
               message="the submit run's extravars written")
    run.kill()
    run.wait()
    assert list(runs.glob("*-submit-*/env/extravars"))
    cli.ok("list")
    assert not list(runs.glob("*/env/extravars"))
    assert "hunter2" not in json.dumps([p.read_text(errors="replace") for p in runs.rglob("*")
                                        if p.is_file()])
    for job in cli.ok("list", "-o", "json").json():
        cli("stop", job["id"], "--grace", "2")
        assert job_processes(job["id"]) == []
