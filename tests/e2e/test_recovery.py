"""The restart policy on real sshd nodes (issue 28 items 1, 5, 6): a failed
attempt is stopped everywhere and the next one launched, by `run --wait` or
by `tsubmit watch`, never twice, also when a watcher dies midway. What runs is
counted from /proc; what each attempt saw is read from its log on the node."""

import contextlib
import fcntl
import json
import signal
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import REPO, TSUBMIT
from tests.harness import eventually
from tests.harness.jobs import attempt_dir, job_id_of, job_processes, log_of, start

pytestmark = pytest.mark.e2e


def attempts_seen(nodes, job_id: str, rank: int, attempt: int) -> list[dict]:
    """What FAIL_UNTIL printed in RANK's log of ATTEMPT, on whichever node holds it."""
    seen = []
    for node in nodes:
        for line in log_of(node, job_id, rank, attempt).splitlines():
            if "ATTEMPT " in line:
                seen.append(json.loads(line.split("ATTEMPT ", 1)[1]))
    return seen


def attempt_dirs(nodes, job_id: str) -> set[str]:
    """rank-N/attempt-K of the job that exist on the nodes."""
    return {f"{path.parent.name}/{path.name}" for node in nodes
            for path in (node.remote_root / job_id).glob("rank-*/attempt-*")}


def started(nodes, job_id: str, attempt: int) -> int:
    """How many ranks of ATTEMPT ever started (launch.sh wrote their pid)."""
    return sum(1 for node in nodes for _ in (node.remote_root / job_id).glob(f"rank-*/attempt-{attempt}/pid"))


def ended_first_attempt(cli, nodes, workdir, *options: str, code: int, until: int) -> str:
    """A job on the first two nodes (with OPTIONS) whose rank 1 exits with CODE while its
    attempt is at most UNTIL (fail_until.py); its id, once both ranks of attempt 1 ended."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = start(cli, "-c", "c", "--executor", "distributed", *options, "--workdir", str(workdir), "--",
                   "python", "fail_until.py", "1", str(code), str(until))
    eventually(lambda: started(nodes.nodes, job_id, 1) == 2 and not job_processes(job_id),
               message="both ranks of attempt 1 started and ended")
    return job_id


@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_run_wait_restarts_a_failed_attempt_and_the_next_one_knows_why(cli, nodes, workdir, executor):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", executor, "--restarts", "2", "--wait", "--workdir",
              str(workdir), "--", "python", "fail_until.py", "1", "3", "1")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    worker = nodes.nodes[1].name
    cause = f"rank 1 on {worker} exited with 3" + (" (worker rank 1, local rank 0)" if executor == "torchrun"
                                                   else "")
    assert f"restarted as attempt 2: {cause}" in run.stderr, run.output
    job = cli.job(job_id)
    assert job["state"] == "succeeded" and job["attempt"] == 2
    [first] = job["attempts"]
    assert first["attempt"] == 1 and first["cause"] == cause and first["restart"] == "policy"
    assert first["hosts"] == [node.name for node in nodes.nodes[:2]]
    assert first["started_at"] <= first["ended_at"]
    # What each rank's command saw, from its log on the node.
    for rank in (0, 1):
        assert attempts_seen(nodes.nodes, job_id, rank, 1) == [
            {"node_rank": rank, "attempt": 1, "cause": ""}]
        assert attempts_seen(nodes.nodes, job_id, rank, 2) == [
            {"node_rank": rank, "attempt": 2, "cause": cause}]
    assert not job_processes(job_id)


def test_the_watcher_restarts_until_the_restarts_are_spent_then_the_job_fails(cli, nodes, workdir,
                                                                             webhook):
    job_id = ended_first_attempt(cli, nodes, workdir, "--restarts", "1", "--notify", webhook.url,
                                 code=4, until=99)
    worker = nodes.nodes[1].name

    first = cli.ok("watch", "--once")
    assert f"job {job_id} " in first.stdout and "restarted as attempt 2" in first.stdout, first.output
    eventually(lambda: started(nodes.nodes, job_id, 2) == 2 and not job_processes(job_id),
               message="both ranks of attempt 2 started and ended")

    second = cli.ok("watch", "--once")
    assert f"job {job_id} " in second.stdout and "has failed" in second.stdout, second.output
    assert "no restart left (--restarts 1)" in second.stdout
    job = cli.job(job_id)
    assert job["state"] == "failed" and job["attempt"] == 2
    assert [(a["attempt"], a["cause"], a["restart"]) for a in job["attempts"]] == [
        (1, f"rank 1 on {worker} exited with 4", "policy"), (2, f"rank 1 on {worker} exited with 4", None)]
    assert attempt_dirs(nodes.nodes, job_id) == {f"rank-{r}/attempt-{a}" for r in (0, 1) for a in (1, 2)}

    third = cli.ok("watch", "--once")  # nothing left to do: not even a refresh
    assert third.stdout == "", third.output
    assert not job_processes(job_id)
    status = cli.ok("status", job_id).stdout
    rows = status[status.index("ATTEMPT  HOSTS"):].splitlines()[1:3]
    assert [row.split()[:3] for row in rows] == [
        [str(attempt), f"{nodes.nodes[0].name},", worker] for attempt in (1, 2)], status
    assert "exited with 4  restarted (--restarts)" in rows[0] and "exited with 4" in rows[1], status
    assert rows[1].endswith("the job failed"), status
    [listed] = [line for line in cli.ok("list").stdout.splitlines() if line.startswith(job_id)]
    assert "failed (attempt 2)" in listed, listed
    # A failed attempt that is restarted is not the job's failure: one message each.
    titles = [body["title"] for body in webhook.bodies]
    assert [title.split(f"({job_id}) ")[1] for title in titles] == [
        f"restarted as attempt 2 after rank 1 on {worker} exited with 4",
        f"failed: rank 1 on {worker} exited with 4"], titles
    failed = webhook.bodies[1]["message"]  # with the end of the failed rank's log, of attempt 2
    assert "of rank 1's log:" in failed and '"attempt": 2' in failed and '"attempt": 1' not in failed, failed

    # A restart by hand gives the job its --restarts anew.
    cli.ok("restart", job_id)
    eventually(lambda: started(nodes.nodes, job_id, 3) == 2 and not job_processes(job_id),
               message="both ranks of attempt 3 started and ended")
    fourth = cli.ok("watch", "--once")
    assert "restarted as attempt 4" in fourth.stdout, fourth.output
    assert [a["restart"] for a in cli.job(job_id)["attempts"]] == ["policy", "user", "policy"]
    eventually(lambda: started(nodes.nodes, job_id, 4) == 2 and not job_processes(job_id),
               message="both ranks of attempt 4 started and ended")


def test_two_watchers_at_once_restart_a_failed_job_once(cli, nodes, workdir):
    job_id = ended_first_attempt(cli, nodes, workdir, "--restarts", "3", code=5, until=1)
    watchers = cli.at_once("watch", "--once", timeout=240)
    outputs = [watcher.output for watcher in watchers]
    assert [watcher.code for watcher in watchers] == [0, 0], outputs
    assert "".join(watcher.stdout for watcher in watchers).count("restarted as attempt") == 1, outputs
    eventually(lambda: cli.job(job_id)["state"] == "succeeded", timeout=120, message="the job succeeded")
    job = cli.job(job_id)
    assert job["attempt"] == 2 and [a["attempt"] for a in job["attempts"]] == [1]
    assert attempt_dirs(nodes.nodes, job_id) == {f"rank-{r}/attempt-{a}" for r in (0, 1) for a in (1, 2)}
    assert started(nodes.nodes, job_id, 2) == 2
    for rank in (0, 1):
        assert len(attempts_seen(nodes.nodes, job_id, rank, 2)) == 1  # each rank started once


def test_a_watcher_killed_mid_relaunch_leaves_what_the_next_pass_completes(cli, nodes, workdir):
    job_id = ended_first_attempt(cli, nodes, workdir, "--restarts", "1", code=6, until=1)
    store = cli.home / "state" / "jobs.sqlite"

    def relaunching() -> bool:  # the next attempt is recorded, its launch under way
        with sqlite3.connect(store) as db:
            attempt, launcher = db.execute("SELECT attempt, launcher FROM jobs WHERE id = ?",
                                           (job_id,)).fetchone()
        return attempt == 2 and launcher != "null"

    watcher = subprocess.Popen([*TSUBMIT, "watch", "--once"], cwd=REPO, env=cli.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(relaunching, timeout=120, interval=0.05,
                   message="attempt 2 recorded, its launch under way")
    finally:
        watcher.send_signal(signal.SIGKILL)
        watcher.wait()

    again = cli.ok("watch", "--once")
    assert "restarted as attempt 3: the launch of attempt 2 was interrupted" in again.stdout, again.output
    eventually(lambda: cli.job(job_id)["state"] == "succeeded", timeout=120, message="the job succeeded")
    job = cli.job(job_id)
    assert [(a["attempt"], a["restart"]) for a in job["attempts"]] == [(1, "policy"), (2, "resumed")]
    # Attempt 2 never runs beside attempt 3, and no rank of attempt 3 started twice.
    assert not any(f"{job_id}.r{r}.a2" in line for r in (0, 1) for line in job_processes(job_id))
    for rank in (0, 1):
        assert len(attempts_seen(nodes.nodes, job_id, rank, 3)) == 1
        assert (nodes.nodes[rank].remote_root / job_id / f"rank-{rank}" / "fence").read_text().strip() == "3"
    assert not job_processes(job_id)


def test_an_attempt_stopped_for_good_never_starts_on_its_node(cli, nodes, workdir):
    """The fence: a launch of an attempt a stop ended (a killed launcher's, still
    under way) is refused on the node, and nothing of it runs."""
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "sleeper.py")
    eventually(lambda: job_processes(job_id), message="the job's processes")
    cli.ok("stop", job_id)
    attempt = attempt_dir(nodes.nodes[0], job_id)
    (attempt / "pid").unlink()  # as if the launch had not reached the start yet
    relaunched = nodes.ssh(nodes.nodes[0], f"/bin/sh {attempt / 'launch.sh'} start", check=False)
    assert relaunched.returncode == 1 and "stopped for good" in relaunched.stderr, relaunched
    assert not job_processes(job_id)
    assert not (attempt / "pid").exists()


def handle_end(cli, job_id: str, cause: str) -> subprocess.CompletedProcess:
    """recovery.handle_end as the watcher's callers call it (a hung rank, a lost node), in a process
    of the test's TSUBMIT_HOME."""
    code = ("import sys; from tsubmit.jobs import recovery; from tsubmit.local.store import open_store; "
            "store = open_store(); job = store.find(sys.argv[1]); "
            "print(recovery.handle_end(store, job, sys.argv[2]).attempt)")
    return subprocess.run([sys.executable, "-c", code, job_id, cause], cwd=REPO, env=cli.env, text=True,
                          capture_output=True, timeout=300, check=True)


def test_an_attempt_ended_for_a_cause_its_ranks_do_not_show_fails_or_restarts(cli, nodes, workdir):
    """What `hangs` and `lostnodes` call: the ranks run, none failed; the attempt ends anyway."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--restarts", "1", "--workdir", str(workdir),
                   "--", "python", "sleeper.py")
    eventually(lambda: len(job_processes(job_id)) >= 4, message="torchrun and a worker on each node")
    assert handle_end(cli, job_id, "rank 1 hung").stdout.strip() == "2"
    eventually(lambda: started(nodes.nodes, job_id, 2) == 2, message="both ranks of attempt 2 started")
    assert not any(f"{job_id}.r{r}.a1" in line for r in (0, 1) for line in job_processes(job_id))
    job = cli.job(job_id)
    assert job["state"] == "running" and [(a["attempt"], a["cause"]) for a in job["attempts"]] == [
        (1, "rank 1 hung")]
    for rank, node in enumerate(nodes.nodes[:2]):  # the next attempt is told
        environment = attempt_dir(node, job_id, rank, 2) / "environment.sh"
        assert "export TSUBMIT_RESTART_CAUSE='rank 1 hung'" in environment.read_text()

    assert handle_end(cli, job_id, "rank 0 hung").stdout.strip() == "2"  # no restart left
    assert not job_processes(job_id)
    job = cli.job(job_id)
    assert job["state"] == "failed" and job["message"] == "rank 0 hung; no restart left (--restarts 1)"
    assert [(a["attempt"], a["restart"]) for a in job["attempts"]] == [(1, "policy"), (2, None)]
    assert {rank["state"] for rank in job["ranks"]} == {"stopped"}


def test_the_documented_ddp_run_resumes_from_its_checkpoint_on_the_next_attempt(cli, nodes, workdir):
    """docs/how-to/unattended.md's worked example, under torchrun: rank 1 dies at step 5, the next
    attempt goes on from the checkpoint of step 4 instead of starting over."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--restarts", "3", "--sync-dir", "ckpt", "--wait", "--workdir", str(workdir),
              "--", "python", "checkpointed.py", "--steps", "8", "--fail-at-step", "5")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    head = nodes.nodes[0]
    first, second = log_of(head, job_id, 0, 1), log_of(head, job_id, 0, 2)
    assert "step 4 loss" in first and "step 6 loss" not in first, first
    # Why attempt 1 ended, as recorded: the rank that ended first (under torchrun rank 0's gloo
    # abort may end before rank 1's agent reports its worker's exit).
    [record] = cli.job(job_id)["attempts"]
    assert f"attempt 2, after: {record['cause']}" in second and " exited with " in record["cause"], second
    assert "resumed from step 4" in second and "done: 8 steps, 4 of them in attempt 2" in second, second
    assert cli.job(job_id)["attempt"] == 2
    assert not job_processes(job_id)
    # --sync-dir ckpt: the worker's node got the head's checkpoint before attempt 2.
    assert (nodes.nodes[1].remote_root / job_id / "workdir" / "ckpt" / "latest.pt").exists()


def test_run_follow_streams_the_next_attempt_after_a_restart(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "distributed", "--restarts", "1", "--follow", "--all",
              "--workdir", str(workdir), "--", "python", "fail_until.py", "1", "3", "1")
    assert run.code == 0, run.output
    shown = [json.loads(line.split("ATTEMPT ", 1)[1])  # the lines of the job, not the summary table
             for line in run.stdout.splitlines() if "ATTEMPT {" in line]
    assert sorted((seen["attempt"], seen["node_rank"]) for seen in shown) == [
        (1, 0), (1, 1), (2, 0), (2, 1)], run.output


def test_run_wait_follows_a_restart_another_watcher_made(cli, nodes, workdir):
    """The job's lock is held elsewhere when its attempt fails: `run --wait` leaves the restart to
    the holder, then waits for the attempt it launched."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    failing = ("import os, sys, time; time.sleep(3); sys.exit("
               "3 if os.environ['NODE_RANK'] == '1' and os.environ['TSUBMIT_ATTEMPT'] == '1' else 0)")
    waiting = subprocess.Popen([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--restarts", "1",
                                "--wait", "--workdir", str(workdir), "--", "python", "-c", failing],
                               cwd=REPO, env=cli.env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    store = cli.home / "state" / "jobs.sqlite"
    try:
        def recorded():
            with contextlib.suppress(sqlite3.Error), sqlite3.connect(store) as db:
                return db.execute("SELECT id, state FROM jobs").fetchone()

        eventually(recorded, interval=0.05, message="the job recorded")
        job_id = recorded()[0]
        lock_path = cli.home / "state" / "watch" / f"{job_id}.lock"
        lock_path.parent.mkdir(mode=0o700, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another watcher's
            eventually(lambda: recorded()[1] == "failed", timeout=120, message="attempt 1 recorded failed")
            code = ("import sys; from tsubmit.jobs import recovery\n"
                    "from tsubmit.local.store import open_store\n"
                    "with recovery.job_lock(sys.argv[1], wait=True):\n"
                    "    store = open_store(); print(recovery.act(store, store.find(sys.argv[1])).attempt)")
            holder = subprocess.Popen([sys.executable, "-c", code, job_id], cwd=REPO, env=cli.env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert holder.communicate(timeout=240)[0].strip() == "2"
        out, err = waiting.communicate(timeout=240)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, out + err
    assert err.count("restarted as attempt 2") == 1, err
    job = cli.job(job_id)
    assert job["state"] == "succeeded" and [a["attempt"] for a in job["attempts"]] == [1]
    assert attempt_dirs(nodes.nodes, job_id) == {f"rank-{r}/attempt-{a}" for r in (0, 1) for a in (1, 2)}


def test_a_next_attempt_that_cannot_be_launched_is_tried_each_pass_then_fails_the_job(cli, nodes, workdir,
                                                                                        tmp_path):
    hook = tmp_path / "refuse.yml"
    hook.write_text("- name: Refuse the second attempt on rank 1\n"
                    "  ansible.builtin.fail:\n"
                    "    msg: no room for attempt 2 here\n"
                    "  when: tsubmit_job_attempt | int == 2 and tsubmit_rank | int == 1\n")
    job_id = ended_first_attempt(cli, nodes, workdir, "--restarts", "1", "--hook", f"pre_launch_tasks={hook}",
                                 code=3, until=99)
    worker = nodes.nodes[1].name
    for tries in (1, 2, 3):
        watched = cli("watch", "--once")
        assert watched.code == 3, watched.output  # the launch failed on a node, named
        assert f"\n  {worker}: " in watched.stderr and "no room for attempt 2 here" in watched.stderr, \
            watched.output
        job = cli.job(job_id)
        assert job["attempt"] == 1 and job["attempts"][0]["launch_failures"] == tries
        assert attempt_dirs(nodes.nodes, job_id) == {"rank-0/attempt-1", "rank-1/attempt-1"}  # rolled back
        assert not job_processes(job_id)
    assert job["state"] == "failed" and "attempt 2 could not be launched (3 tries)" in job["message"], job
    assert job["attempts"][0]["restart"] is None
    assert cli.ok("watch", "--once").stdout == ""
