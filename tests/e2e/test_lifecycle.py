"""The job lifecycle on real sshd nodes and real processes: states, logs,
stop, restart, delete and the refresh of many jobs in one playbook run."""

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.harness import eventually
from tests.harness.jobs import attempt_dir, job_id_of, log_of, start

pytestmark = pytest.mark.e2e


def test_a_rank_that_exits_7_fails_the_job(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "seven", "--wait",
              "--workdir", str(workdir), "--", "python", "exit_on_rank.py", "1", "7")
    assert run.code == 1, run.output
    assert re.search(r"1\s+node2\s+failed\s+\d+\s+7", run.stdout), run.stdout
    job = cli.job("seven")
    assert job["state"] == "failed"
    assert job["message"] == "rank 1 on node2 exited with 7"
    assert [(r["rank"], r["state"], r["exit_code"]) for r in job["ranks"]] == [
        (0, "succeeded", 0), (1, "failed", 7)]
    assert cli.ok("logs", "seven", "--rank", "1").stdout == "node 1 says hello\n"


def test_stopping_a_torchrun_job_leaves_no_process_on_any_node(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_gpus=2)
    job_id = start(cli, "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py")
    members = nodes.nodes[:2]
    # torchrun and its two workers on each node
    eventually(lambda: all(len(nodes.processes_of(n, r"sleeper\.py")) >= 3 for n in members),
               message="torchrun and its two workers on both nodes")
    assert cli.job(job_id)["state"] == "running"

    stop = cli.ok("stop", job_id, "--grace", "10")
    assert f"job {job_id}" in stop.stdout and "stopped" in stop.stdout
    for node in members:
        assert nodes.processes_of(node, r"sleeper\.py|torchrun|" + job_id) == []
    job = cli.job(job_id)
    assert job["state"] == "stopped"
    assert {r["state"] for r in job["ranks"]} == {"stopped"}
    again = cli.ok("stop", job_id)
    assert "is stopped; nothing of it was running" in again.stdout


def test_a_job_ignoring_sigterm_is_killed_after_the_grace_period(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "sleeper.py", "--ignore-term")
    node = nodes.nodes[0]
    eventually(lambda: "tick 1" in log_of(node, job_id, 0), message="'tick 1' in rank 0's log")
    started = time.monotonic()
    cli.ok("stop", job_id, "--grace", "2")
    assert time.monotonic() - started >= 2
    assert nodes.processes_of(node, r"sleeper\.py") == []
    assert cli.job(job_id)["state"] == "stopped"


def open_gate(node, job_id, name="go"):
    """Let a gated.py job of JOB_ID on NODE go on."""
    (node.remote_root / job_id / "workdir" / name).touch()


def line_reader(stream) -> "queue.Queue[str]":
    """STREAM's lines as they come (then "" at its end), read by a thread of their own."""
    lines: queue.Queue[str] = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_logs_follow_streams_until_the_job_ends_with_its_code(cli, nodes, workdir):
    """The job waits at its gate until the follow printed its first lines, however
    loaded the machine; the follow ends, and is ended if the test fails."""
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "gated.py", "6", "3", "go")
    follow = subprocess.Popen([sys.executable, "-m", "tsubmit", "logs", job_id, "-f"], env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = line_reader(follow.stdout)
        # it streams: the first lines arrive while the job waits at its gate, unflushed
        first = [lines.get(timeout=120) for _ in range(7)]
        assert first == [f"line {i} of worker 0\n" for i in range(6)] + ["to stderr from worker 0\n"]
        open_gate(nodes.nodes[0], job_id)
        rest = iter(lambda: lines.get(timeout=120), "")
        assert [line.rstrip("\n") for line in rest] == [f"line {i} of worker 0" for i in range(6, 12)]
        assert follow.wait(timeout=120) == 1, follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        cli("stop", job_id, "--grace", "2")


def test_restart_runs_attempt_2_and_keeps_attempt_1_logs(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "sleeper.py")
    eventually(lambda: "tick 0" in log_of(nodes.nodes[1], job_id, 1), message="'tick 0' in rank 1's log")
    refused = cli("restart", job_id)
    assert refused.code == 2 and "rank 0" in refused.stderr and "still runs" in refused.stderr
    cli.ok("stop", job_id, "--grace", "5")

    cli.ok("restart", job_id)
    eventually(lambda: "tick 0" in log_of(nodes.nodes[1], job_id, 1, attempt=2),
               message="'tick 0' in rank 1's log of attempt 2")
    job = cli.job(job_id)
    assert job["attempt"] == 2 and job["state"] == "running"
    assert {r["attempt"] for r in job["ranks"]} == {2}
    assert "tick 0" in cli.ok("logs", job_id, "--rank", "1", "--attempt", "1").stdout
    env_line = cli.ok("logs", job_id, "--tail", "1").stdout
    assert env_line.startswith("tick ")
    cli.ok("stop", job_id, "--grace", "5")


def test_restart_increments_the_attempt_seen_by_the_job(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                 "--", "python", "-c", "import os; print('attempt', os.environ['TSUBMIT_ATTEMPT'])")
    job_id = job_id_of(run)
    cli.ok("restart", job_id)
    eventually(lambda: cli.job(job_id)["state"] == "succeeded", message="the restarted job succeeded")
    assert cli.ok("logs", job_id).stdout == "attempt 2\n"
    assert cli.ok("logs", job_id, "--attempt", "1").stdout == "attempt 1\n"
    # said as a sentence says it, not "is succeeded" (issue 26, item 19)
    assert f"({cli.job(job_id)['name']}) has succeeded; nothing of it was running" in cli.ok(
        "stop", job_id).stdout


def test_delete_removes_remote_directories_and_the_record(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "sleeper.py")
    members = nodes.nodes[:2]
    eventually(lambda: all((n.remote_root / job_id).is_dir() for n in members),
               message="the job's folder on both nodes")
    cli.ok("delete", job_id, "--yes")
    for node in members:
        assert not (node.remote_root / job_id).exists()
        assert nodes.processes_of(node, r"sleeper\.py") == []
    assert cli("status", job_id).code == 2


def test_list_refreshes_every_active_job_in_one_playbook_run(cli, nodes, workdir):
    cli.write_cluster("a", nodes, nodes.nodes[:2])
    cli.write_cluster("b", nodes, nodes.nodes[1:])
    ids = [start(cli, "-c", cluster, "--executor", "distributed", "--workdir", str(workdir), "--",
                 "python", "sleeper.py") for cluster in ("a", "b", "a")]
    before = cli.status_runs()
    listing = cli.ok("list", "-o", "json").json()
    assert cli.status_runs() - before == 1
    assert {job["id"]: job["state"] for job in listing} == dict.fromkeys(ids, "running")
    table = cli.ok("list").stdout
    try:
        assert table.splitlines()[0].split() == ["ID", "NAME", "CLUSTER", "EXECUTOR", "NODES", "STATE",
                                                 "AGE", "RUNTIME", "REASON"]
    finally:
        cli.ok("delete", "--all", "--yes")  # the jobs end even when the test fails


def test_a_reused_pid_is_not_taken_for_the_job(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "sleeper.py")
    node = nodes.nodes[0]
    pid_file = attempt_dir(node, job_id) / "pid"
    eventually(lambda: "tick 0" in log_of(node, job_id, 0), message="'tick 0' in rank 0's log")
    pid, ticks, started = pid_file.read_text().split()
    # The job dies behind tsubmit's back (no exit code), and its pid goes to
    # an unrelated process: simulated by pointing the record at a live one.
    os.killpg(int(pid), signal.SIGKILL)
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text(f"{unrelated.pid} {ticks} {started}\n")
        job = cli.job(job_id)
        assert job["ranks"][0]["state"] == "lost"
        assert job["state"] == "failed"
    finally:
        unrelated.kill()


def test_run_timeout_stops_the_job_and_exits_1(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--timeout", "3s",
              "--workdir", str(workdir), "--", "python", "sleeper.py")
    assert run.code == 1
    assert "exceeded its timeout of 3s" in run.stderr
    assert nodes.processes_of(nodes.nodes[0], r"sleeper\.py") == []
    [job] = cli.ok("list", "-o", "json").json()
    assert job["state"] == "stopped"


def test_distributed_max_restarts_reruns_a_failed_command(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--executor", "distributed", "--max-restarts", "2", "--wait",
              "--workdir", str(workdir), "--", "python", "exit_on_rank.py", "0", "5")
    assert run.code == 1
    log = cli.ok("logs", job_id_of(run)).stdout
    assert log.count("node 0 says hello") == 3
    assert "restart 2" in log


def test_an_unreachable_node_is_reported_as_such_not_as_a_failed_job(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                   "python", "sleeper.py")
    worker = nodes.nodes[1]
    eventually(lambda: "tick 0" in log_of(worker, job_id, 1), message="'tick 0' in rank 1's log")
    nodes.stop_node(worker)  # a partition: the rank keeps running, its node does not answer
    try:
        job = cli.job(job_id)
        assert [r["state"] for r in job["ranks"]] == ["running", "unreachable"]
        assert job["state"] == "running"
        assert "unreachable: node2" in job["message"]
    finally:
        nodes.start_node(worker)
    eventually(lambda: cli.job(job_id)["ranks"][1]["state"] == "running", timeout=120,
               message="rank 1 running again once node2 answers")
    cli.ok("stop", job_id, "--grace", "5")
    assert nodes.processes_of(worker, r"sleeper\.py") == []


def test_the_state_folder_keeps_what_a_failed_run_needs_and_no_successful_run(cli, nodes, workdir):
    """Every playbook run used to keep its runner folder (2,365 folders, 348 MB in a
    45-minute soak): now a successful one goes, a failed one stays, without secrets."""
    del cli.env["TSUBMIT_KEEP_RUNS"]
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    down = {**nodes.host_vars(nodes.nodes[1]), "ansible_port": 1}  # nothing listens there
    (cli.home / "config" / "clusters" / "down.yml").write_text(
        yaml.safe_dump({"all": {"hosts": {nodes.nodes[1].name: down}}}))
    assert cli("cluster", "check", "down").code == 3
    runs = cli.home / "state" / "runs"
    seen = []
    for _ in range(2):
        job_id = start(cli, "-c", "c", "--executor", "distributed", "--wait", "--env", "SECRET=hunter2",
                       "--workdir", str(workdir), "--", "python", "-c", "print('done')")
        cli.ok("status", job_id)
        seen.append({path.name: (path / "outcome").read_text() for path in runs.iterdir()})
    first, outcomes = seen
    failed = [name for name, outcome in outcomes.items() if outcome != "successful"]
    assert len(failed) == 1 and "-check-" in failed[0], outcomes
    # the last command's own runs stay until the next command (it may still read
    # them); the first job's went with the second's
    ran_first = {name for name, outcome in first.items() if outcome == "successful"}
    assert ran_first and not ran_first & set(outcomes), seen
    (kept,) = failed
    files = [path for path in (runs / kept).rglob("*") if path.is_file()]
    assert any("job_events" in str(path) for path in files)
    assert not [path for path in files if path.name in ("extravars", "command")]
    assert "hunter2" not in "".join(path.read_text(errors="replace") for path in runs.rglob("*")
                                    if path.is_file())


@contextlib.contextmanager
def _following_two_nodes(cli, nodes, workdir, node_timeout: str):
    """A job ticking on two nodes with NODE_TIMEOUT, and `logs -f --all` following it (the
    process, yielded). Whatever the test did, the follow ends, the second node's sshd is
    back, and the job is stopped with nothing of it left on that node."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = start(cli, "-c", "c", "--executor", "distributed", "--node-timeout", node_timeout,
                   "--workdir", str(workdir), "--", "python", "sleeper.py")
    follow = subprocess.Popen([sys.executable, "-m", "tsubmit", "logs", job_id, "-f", "--all"], env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield follow
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        nodes.start_node(nodes.nodes[1])
        cli("stop", job_id, "--grace", "2")
    assert not nodes.processes_of(nodes.nodes[1], r"sleeper\.py")


def test_logs_follow_gives_up_on_a_node_that_stops_answering_naming_it(cli, nodes, workdir):
    """`logs -f --all` while the second node's sshd dies: the follow of that rank is
    tried again for the job's node timeout, then every follow ends with exit 3
    naming the host, instead of waiting forever for a rank that still runs on
    the first node (issue 29 item 4)."""
    node2 = nodes.nodes[1]
    with _following_two_nodes(cli, nodes, workdir, "8s") as follow:
        lines = line_reader(follow.stdout)
        # both ranks stream before the node goes
        seen: set[str] = set()
        while seen != {"node1", "node2"}:
            seen.add(re.match(r"\[rank \d (\w+)\] tick", lines.get(timeout=120)).group(1))
        nodes.stop_node(node2)
        lost = time.monotonic()
        assert follow.wait(timeout=180) == 3
        waited = time.monotonic() - lost
        stderr = follow.stderr.read()
        assert "no answer from node2" in stderr and "trying again for up to 8 s" in stderr, stderr
        assert "gave up following the log on node2: no answer for 8 s" in stderr, stderr
        assert "  node2: no answer for 8 s" in stderr, stderr
        assert "node1:" not in stderr, stderr
        assert waited >= 8, waited
        assert nodes.processes_of(nodes.nodes[0], r"sleeper\.py"), "rank 0 runs on: only the follow ended"
    assert not nodes.processes_of(nodes.nodes[0], r"^tail ")


def test_logs_follow_takes_up_a_node_that_answers_again_where_it_stopped(cli, nodes, workdir):
    """A node whose sshd is gone for a while, back within the node timeout: its
    rank's log is followed on from the last line shown, none lost, none twice."""
    node2 = nodes.nodes[1]
    with _following_two_nodes(cli, nodes, workdir, "2m") as follow:
        lines, notices = line_reader(follow.stdout), line_reader(follow.stderr)
        ticks: list[int] = []

        def next_tick_of_node2() -> int:
            while True:
                found = re.match(r"\[rank 1 node2\] tick (\d+)", lines.get(timeout=120))
                if found:
                    ticks.append(int(found.group(1)))
                    return ticks[-1]

        next_tick_of_node2()
        nodes.stop_node(node2)
        assert "no answer from node2" in notices.get(timeout=120)
        nodes.start_node(node2)
        assert "node2 answers again" in notices.get(timeout=120)
        started_again = ticks[-1]
        while next_tick_of_node2() < started_again + 3:
            pass
        assert ticks == list(range(ticks[0], ticks[-1] + 1)), ticks
