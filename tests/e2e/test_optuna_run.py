"""`tsubmit run --executor optuna` end to end on real sshd nodes: one worker
per node against one study whose SQLite store runs on the head."""

import json
import shutil
import sqlite3

import pytest

from tests.conftest import EXAMPLES
from tests.harness import eventually
from tests.harness.jobs import job_id_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def search_dir(tmp_path):
    target = tmp_path / "optuna"
    shutil.copytree(EXAMPLES / "optuna", target)
    return target


def trials(node, study: str) -> list[tuple[str, str]]:
    """(state, node attribute) of every trial in the study's file on the head."""
    database = node.remote_root / "optuna-studies" / f"{study}.db"
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT t.state, a.value_json FROM trials t JOIN studies s USING (study_id) "
            "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'node' "
            "WHERE s.study_name = ?", (study,)).fetchall()


def test_a_two_node_search_fills_one_study_on_the_head(cli, nodes, search_dir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "optuna", "--study", "e2e-search", "--direction",
              "minimize", "--wait", "--workdir", str(search_dir), "--", "python", "search.py", "3")
    job = job_id_of(run)
    assert run.code == 0, run.output + cli("logs", job, "--all").stdout
    head = nodes.nodes[0]
    found = trials(head, "e2e-search")
    assert len(found) == 6
    assert {state for state, _ in found} == {"COMPLETE"}
    assert sorted(node for _, node in found) == ['"0"'] * 3 + ['"1"'] * 3
    status = cli.ok("status", job).stdout
    assert "trials: 6 (complete 6)" in status and "best: " in status

    # the same study again continues it
    again = cli("run", "-c", "c", "--executor", "optuna", "--study", "e2e-search", "--wait",
                "--workdir", str(search_dir), "--", "python", "search.py", "2")
    assert again.code == 0, again.output
    assert len(trials(head, "e2e-search")) == 10
    # once the workers ended, nothing of the store is left running
    eventually(lambda: nodes.processes_of(head, "optuna_store") == [], timeout=30,
               message="no optuna_store process left on the head",
               detail=lambda: nodes.processes_of(head, "optuna_store"))


def test_stop_leaves_no_store_worker_or_running_trial(cli, nodes, search_dir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli.ok("run", "-c", "c", "--executor", "optuna", "--study", "e2e-stop", "--env",
                 "TRIAL_SECONDS=30", "--workdir", str(search_dir), "--", "python", "search.py", "5")
    job = job_id_of(run)
    head = nodes.nodes[0]
    eventually(lambda: any(state == "RUNNING" for state, _ in trials(head, "e2e-stop")), timeout=90,
               interval=1, message="a RUNNING trial in study e2e-stop",
               detail=lambda: cli("logs", job, "--all").stdout)
    cli.ok("stop", job, "--grace", "5")
    assert [state for state, _ in trials(head, "e2e-stop") if state == "RUNNING"] == []
    for node in nodes.nodes[:2]:
        assert nodes.processes_of(node, r"search\.py|optuna_store|optuna-dashboard") == []


def test_optuna_keys_of_a_spec_match_the_flags(cli, search_dir, tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text("executor: optuna\nname: s\nstudy: nightly\ndirection: maximize\ndashboard: true\n"
                    "optuna_storage: postgresql://u:s3cret@db.example/optuna\ncommand: python search.py\n"
                    f"workdir: {search_dir}\n")
    from_spec = cli.ok("run", "--dry-run", "-o", "json", "-f", str(spec)).json()
    from_flags = cli.ok("run", "--dry-run", "-o", "json", "--executor", "optuna", "--name", "s",
                        "--study", "nightly", "--direction", "maximize", "--dashboard",
                        "--optuna-storage", "postgresql://u:s3cret@db.example/optuna", "--workdir",
                        str(search_dir), "--", "python", "search.py").json()
    optuna = from_spec["extravars"]["tsubmit_job_optuna"]
    assert optuna == from_flags["extravars"]["tsubmit_job_optuna"]
    assert (optuna["study"], optuna["direction"], optuna["dashboard"]) == ("nightly", "maximize", True)
    assert "s3cret" not in json.dumps(from_spec)  # the password is masked
    [rank] = from_spec["ranks"]
    assert "export STUDY_NAME=nightly" in rank["environment"]
    assert "export OPTUNA_STORAGE=" in rank["environment"]
    assert "export MASTER_ADDR=127.0.0.1" in rank["environment"]


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "optuna", "--direction", "sideways"], "sideways"),
    (["--executor", "optuna", "--optuna-storage", "not a url"], "not a url"),
    (["--study", "s"], "--study goes with --executor optuna"),
])
def test_bad_optuna_input(cli, search_dir, args, message):
    run = cli("run", *args, "--workdir", str(search_dir), "--", "python", "search.py")
    assert run.code == 2, run.output
    assert message in run.stderr and "Traceback" not in run.output


def test_check_shows_the_workers_view_and_starts_no_store(cli, nodes, search_dir):
    """`run --check` on an Optuna job: the head's store is not started, so the
    workers' view names the head and a placeholder port, as --dry-run does."""
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    options = ["--executor", "optuna", "--study", "check-only", "--workdir", str(search_dir),
               "--", "python", "search.py", "3"]
    dry = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", *options).json()
    check = cli.ok("run", "-c", "c", "--check", *options).stdout
    head = nodes.nodes[0]
    assert check.count(f"export DATABASE_URI='grpc://{head.address}:<store port>'") == 2
    for rank in dry["ranks"]:
        assert f"export DATABASE_URI='grpc://{head.address}:<store port>'" in rank["environment"]
    assert "check mode: nothing was launched" in check
    assert nodes.processes_of(head, "optuna_store") == []
    assert not (head.remote_root / "optuna-studies" / "check-only.db").exists()
    assert cli.ok("list", "-o", "json").json() == []
