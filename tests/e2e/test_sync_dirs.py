"""`--sync-dir` on real sshd nodes, each with a remote root of its own (so no two
share a filesystem unless a test makes them): before a job's next attempt the
newest copy of each synced folder reaches every node of that attempt through
the controller, and the job's own output says what it resumed from."""

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
import yaml

from tests.conftest import EXAMPLES, REPO
from tests.harness.jobs import attempt_runs, job_id_of, log_of, stop_and_count, watch_until

pytestmark = pytest.mark.e2e

CHECKPOINT = ["--", "python", "checkpoint.py"]


def submitted(cli, *args) -> str:
    return job_id_of(cli.ok("run", "--executor", "distributed", "--wait", *args))


def wait_for_end(cli, job_id) -> dict:
    run = cli("wait", job_id, timeout=300)
    assert run.code == 0, run.output
    return cli.job(job_id)


def playbook_hosts(cli, playbook: str, task: str) -> list[list[str]]:
    """Per run of PLAYBOOK (oldest first), the hosts TASK ran on, from runner's own records."""
    runs = sorted((cli.home / "state" / "runs").glob(f"*-{playbook}-*"))
    found = []
    for folder in runs:
        hosts = set()
        for event in folder.glob("artifacts/*/job_events/*.json"):
            data = json.loads(event.read_text())
            if data.get("event") == "runner_on_ok" and data["event_data"].get("task") == task:
                hosts.add(data["event_data"]["host"])
        found.append(sorted(hosts))
    return found


PLACE_TASK = "Place the synced folders"


def test_a_restart_resumes_rank_1_from_rank_0s_checkpoint(cli, nodes, workdir, no_injection):
    """Rank 0's copy is synced even where node2's own copy is newer; a folder whose name
    is a template or a command substitution is data, and absent, so nothing is sent for it."""
    hostile = "$(touch /tmp/tsubmit-render-pwned){{ lookup('pipe', 'touch /tmp/tsubmit-render-pwned') }}"
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = submitted(cli, "-c", "c", "--workdir", str(workdir), "--sync-dir", "ckpt",
                       "--sync-dir", hostile, *CHECKPOINT, "all")
    node1, node2 = nodes.nodes[:2]
    assert log_of(node2, job_id, 1, 1) == "rank 1 fresh\n"
    # node2's own copy is the newer one (stamped later), but rank 0's is the job's.
    assert (node2.remote_root / job_id / "workdir" / "ckpt" / "step.txt").read_text() == "attempt 1 rank 1"

    cli.ok("restart", job_id)
    assert wait_for_end(cli, job_id)["attempt"] == 2
    assert cli.ok("logs", job_id, "--rank", "1").stdout == "rank 1 resumed from: attempt 1 rank 0\n"
    assert cli.ok("logs", job_id, "--rank", "0").stdout == "rank 0 resumed from: attempt 1 rank 0\n"
    # Sent once, to node2 only: node1 holds the source.
    assert playbook_hosts(cli, "sync_dirs", PLACE_TASK) == [["node2"]]
    # Nothing of the sync is left on the nodes (the packed copy, the incoming folder, the old copy).
    for node in (node1, node2):
        left = [path.name for folder in (node.remote_root / job_id, node.remote_root / job_id / "workdir")
                for path in folder.iterdir() if "sync" in path.name]
        assert left == [], node.name
    assert not list((cli.home / "state" / "sync").iterdir())


def test_a_shared_filesystem_is_sent_the_copy_once(cli, nodes, workdir):
    """node2 and node3 keep their jobs in one remote root (one machine, or one NFS
    export): the sync sends them one copy, and both ranks resume from it."""
    node2 = nodes.nodes[1]
    path = cli.write_cluster("c", nodes, nodes.nodes)
    inventory = yaml.safe_load(path.read_text())
    inventory["all"]["hosts"]["node3"]["tsubmit_remote_root"] = str(node2.remote_root)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    job_id = submitted(cli, "-c", "c", "--workdir", str(workdir), "--sync-dir", "ckpt", *CHECKPOINT)

    cli.ok("restart", job_id)
    wait_for_end(cli, job_id)
    [placed] = playbook_hosts(cli, "sync_dirs", PLACE_TASK)
    assert placed in (["node2"], ["node3"])
    for rank in (1, 2):
        assert log_of(node2, job_id, rank, 2) == f"rank {rank} resumed from: attempt 1 rank 0\n"


RELAUNCH = """
import sys
from tsubmit.jobs import run
from tsubmit.errors import TsubmitError
from tsubmit.jobs.recovery_plan import next_plan
from tsubmit.local.store import open_store

store = open_store()
job = store.find(sys.argv[1])
try:
    print(run.relaunch(store, next_plan(job, sys.argv[2:], store=store)).attempt)
except TsubmitError as error:
    print(error, getattr(error, "host_errors", ""), file=sys.stderr)
    sys.exit(error.exit_code)
"""


def relaunch_without(cli, job_id, lost_hosts):
    """What the recovery engine does when LOST are lost: the next attempt's plan
    (recovery_plan.next_plan: a spare takes a lost rank), launched by run.relaunch."""
    return subprocess.run([sys.executable, "-c", RELAUNCH, job_id, *lost_hosts], cwd=REPO, env=cli.env,
                          capture_output=True, text=True, timeout=600)


def spare_cluster(cli, ops_nodes):
    """The four ops nodes, the last a spare (kept out of launches)."""
    path = cli.write_cluster("ops", ops_nodes, ops_nodes.nodes)
    inventory = yaml.safe_load(path.read_text())
    inventory["all"]["hosts"][ops_nodes.nodes[3].name]["tsubmit_spare"] = True
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))


def test_rank_0s_node_lost_the_copy_written_last_follows_the_job(cli, ops_nodes, workdir):
    """Every rank checkpoints; the head's node is lost; the next attempt, on the
    spare (which never held the job) and the two survivors, resumes from the
    survivors' newest copy, rank 2's. Unkind nodes: a slow login, a stale python
    first on PATH."""
    a, b, c, d = ops_nodes.nodes
    spare_cluster(cli, ops_nodes)
    job_id = submitted(cli, "-c", "ops", "--workdir", str(workdir), "--sync-dir", "ckpt", *CHECKPOINT, "all")
    assert [rank["host"] for rank in cli.job(job_id)["ranks"]] == [a.name, b.name, c.name]
    ops_nodes.lose_node(a)
    try:
        relaunched = relaunch_without(cli, job_id, [a.name])
        assert relaunched.returncode == 0, relaunched.stderr
        wait_for_end(cli, job_id)
        for node, rank in ((d, 0), (b, 1), (c, 2)):
            assert log_of(node, job_id, rank, 2) == f"rank {rank} resumed from: attempt 1 rank 2\n"
        # c held the source; d never held the tree: its copy waited for the launch to unpack it.
        assert sorted(playbook_hosts(cli, "sync_dirs", PLACE_TASK)[0]) == sorted([d.name, b.name])
        assert not (d.remote_root / job_id / "synced").exists()
    finally:
        ops_nodes.start_node(a)


def test_a_node_of_the_next_attempt_that_does_not_answer_stops_the_relaunch(cli, ops_nodes, workdir):
    """The spare that would take the lost node's rank does not answer either: the
    relaunch stops before anything of the next attempt starts, naming it."""
    a, b, _, d = ops_nodes.nodes
    spare_cluster(cli, ops_nodes)
    job_id = submitted(cli, "-c", "ops", "--limit", f"{a.name},{b.name},{d.name}", "--workdir",
                       str(workdir), "--sync-dir", "ckpt", *CHECKPOINT)
    ops_nodes.lose_node(b)
    ops_nodes.lose_node(d)
    try:
        relaunched = relaunch_without(cli, job_id, [b.name])
        assert relaunched.returncode == 3, relaunched.stderr
        assert f"cannot sync ckpt of job {job_id} to its next attempt" in relaunched.stderr
        assert d.name in relaunched.stderr
    finally:
        ops_nodes.start_node(b)
        ops_nodes.start_node(d)
    job = cli.job(job_id)
    assert job["attempt"] == 1 and job["state"] == "succeeded"
    assert not (d.remote_root / job_id).exists()


def test_a_synced_folder_that_leaves_the_workdir_on_a_node_is_refused(cli, nodes, workdir, tmp_path):
    """The job made ckpt a link to a folder outside its workdir: the restart names the
    host and the folder, and the job stays at its attempt."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    job_id = submitted(cli, "-c", "c", "--workdir", str(workdir), "--sync-dir", "ckpt", "--",
                       "python", "-c", "import os; os.symlink('/etc', 'ckpt')")
    restarted = cli("restart", job_id)
    assert restarted.code == 3, restarted.output
    assert "ckpt leaves the workdir" in restarted.stderr and "node1" in restarted.stderr
    assert cli.job(job_id)["attempt"] == 1


@pytest.mark.parametrize("given, named", [
    (["--sync-dir", "/data/ckpt"], "--sync-dir /data/ckpt is absolute"),
    (["--sync-dir", "~/ckpt"], "--sync-dir ~/ckpt is absolute"),
    (["--sync-dir", "../ckpt"], "--sync-dir ../ckpt leaves the job's workdir"),
    (["--sync-dir", "ckpt/../../x"], "--sync-dir ckpt/../../x leaves the job's workdir"),
    (["--sync-dir", "."], "--sync-dir . is the whole workdir"),
    (["--sync-dir", ""], "--sync-dir '' is not a path"),
])
def test_a_sync_dir_outside_the_workdir_is_refused(cli, workdir, given, named):
    run = cli("run", "--workdir", str(workdir), *given, "--", "python", "count.py", "1", "0")
    assert run.code == 2, run.output
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"tsubmit: {named}"), line
    assert cli.ok("list", "-o", "json").json() == []


def test_a_spec_files_sync_dirs_are_checked_as_the_option(cli, workdir, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"command": ["python", "count.py", "1", "0"], "workdir": str(workdir),
                                    "sync_dirs": ["ckpt", "../outside"]}))
    run = cli("run", "-f", str(spec))
    assert run.code == 2 and "--sync-dir ../outside leaves the job's workdir" in run.stderr, run.output
    spec.write_text(yaml.safe_dump({"command": ["python", "count.py", "1", "0"], "sync_dirs": "ckpt"}))
    run = cli("run", "-f", str(spec))
    assert run.code == 2 and "'sync_dirs' must be a list of strings" in run.stderr, run.output


def study_trials(node, study: str) -> int:
    with sqlite3.connect(node.remote_root / "optuna-studies" / f"{study}.db") as database:
        return database.execute("SELECT COUNT(*) FROM trials t JOIN studies s USING (study_id) "
                                "WHERE s.study_name = ? AND t.state = 'COMPLETE'", (study,)).fetchone()[0]


def test_an_optuna_study_moves_with_the_head(cli, ops_nodes, tmp_path):
    """The head's node was lost (silent past its timeout) and answers again: the next
    attempt runs without it, the spare taking rank 0, so the study's store moves
    there, and the study's SQLite file with it: the next attempt's workers add
    their trials to the first attempt's. Every node of the attempt gets a copy,
    the one left when a head is lost for good."""
    a, b, _, d = ops_nodes.nodes
    search = tmp_path / "optuna"
    shutil.copytree(EXAMPLES / "optuna", search)
    spare_cluster(cli, ops_nodes)
    run = cli.ok("run", "-c", "ops", "--limit", f"{a.name},{b.name},{d.name}", "--executor", "optuna",
                 "--study", "moving", "--wait", "--workdir", str(search), "--", "python", "search.py", "2")
    job_id = job_id_of(run)
    assert study_trials(a, "moving") == 4
    ops_nodes.lose_node(a)
    ops_nodes.start_node(a)
    relaunched = relaunch_without(cli, job_id, [a.name])
    assert relaunched.returncode == 0, relaunched.stderr
    wait_for_end(cli, job_id)
    assert [rank["host"] for rank in cli.job(job_id)["ranks"]] == [d.name, b.name]
    assert study_trials(d, "moving") == 8
    assert "trials: 8 (complete 8)" in cli.ok("status", job_id).stdout
    assert study_trials(b, "moving") == 4  # the first attempt's, as the sync left it


@pytest.fixture
def lose(nodes):
    """Lose a node for the test (nodes.lose_node), brought back at its end whatever happens."""
    taken = []

    def lose_node(node):
        taken.append(node)
        nodes.lose_node(node)

    yield lose_node
    for node in taken:
        nodes.start_node(node)
        nodes.kill_processes(node)


def test_a_lost_node_s_rank_resumes_on_the_spare_from_the_heads_checkpoint(cli, nodes, workdir, lose):
    """The watcher finds the worker's node lost (past --node-timeout) and relaunches
    its rank on the spare, which never held the job: the spare's rank resumes from
    the head's checkpoint, synced through the controller before the launch."""
    head, worker, spare = nodes.nodes
    path = cli.write_cluster("c", nodes, [head, worker, spare])
    inventory = yaml.safe_load(path.read_text())
    inventory["all"]["hosts"][spare.name]["tsubmit_spare"] = True
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--restarts", "2", "--node-timeout", "2s",
                 "--sync-dir", "ckpt", "--workdir", str(workdir), *CHECKPOINT, "wait")
    job_id = job_id_of(run)
    checkpoint = head.remote_root / job_id / "workdir" / "ckpt" / "step.txt"
    watch_until(cli, lambda: checkpoint.exists() and log_of(worker, job_id, 1, 1), "the checkpoint written")
    lose(worker)
    watch_until(cli, lambda: attempt_runs(cli, job_id, 2, [head.name, spare.name]), "attempt 2 on the spare")
    watch_until(cli, lambda: log_of(spare, job_id, 1, 2), "the spare's rank started")
    assert log_of(spare, job_id, 1, 2) == "rank 1 resumed from: attempt 1 rank 0\n"
    assert log_of(head, job_id, 0, 2) == "rank 0 resumed from: attempt 1 rank 0\n"
    stop_and_count(cli, job_id)
