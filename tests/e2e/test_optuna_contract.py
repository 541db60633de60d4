"""torch-submit's Optuna contract, unchanged, on tsubmit's head-node store (issue
16, item 4): `optuna.load_study(study_name=os.environ["STUDY_NAME"],
storage=os.environ["DATABASE_URI"])` and `optuna.create_study(...,
storage=DATABASE_URI, load_if_exists=True)` work on every node against the
head's SQLite store; tsubmit_optuna.load_study() still does; and
TSUBMIT_OPTUNA_URI=off gives Optuna's own lookup back. On nodes whose first
python3.13 on PATH is a stale shim and whose inventory names no
ansible_python_interpreter."""

import sqlite3

import pytest
import yaml

from tests.harness.jobs import job_id_of

pytestmark = pytest.mark.e2e

TORCH_SUBMIT_SCRIPT = '''
import os
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
if sys.argv[1] == "load":
    study = optuna.load_study(study_name=os.environ["STUDY_NAME"], storage=os.environ["DATABASE_URI"])
elif sys.argv[1] == "create":
    study = optuna.create_study(study_name=os.environ["STUDY_NAME"], storage=os.environ["DATABASE_URI"],
                                load_if_exists=True, direction="minimize")
else:
    import tsubmit_optuna

    study = tsubmit_optuna.load_study()


def objective(trial):
    trial.set_user_attr("node", os.environ["NODE_RANK"])
    x = trial.suggest_float("x", -10, 10)
    return (x - 2) ** 2


study.optimize(objective, n_trials=2)
print("DONE", os.environ["NODE_RANK"], type(study._storage).__name__, flush=True)
'''


def discovering_cluster(cli, nodes, members):
    """A named cluster without ansible_python_interpreter (Ansible would discover one)."""
    path = cli.write_cluster("c", nodes, members)
    inventory = yaml.safe_load(path.read_text())
    for host_vars in inventory["all"]["hosts"].values():
        host_vars.pop("ansible_python_interpreter")
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))


def trial_nodes(head, study: str) -> list[str]:
    database = head.remote_root / "optuna-studies" / f"{study}.db"
    with sqlite3.connect(database) as db:
        return sorted(row[0] for row in db.execute(
            "SELECT a.value_json FROM trials t JOIN studies s USING (study_id) "
            "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'node' "
            "WHERE s.study_name = ? AND t.state = 'COMPLETE'", (study,)))


@pytest.mark.parametrize("how", ["load", "create", "helper"])
def test_torch_submits_optuna_calls_work_unchanged_on_every_node(cli, nodes, tmp_path, how):
    workdir = tmp_path / "search"
    workdir.mkdir()
    (workdir / "search.py").write_text(TORCH_SUBMIT_SCRIPT)
    discovering_cluster(cli, nodes, nodes.nodes[:2])
    study = f"contract-{how}"
    run = cli("run", "-c", "c", "--executor", "optuna", "--study", study, "--wait",
              "--workdir", str(workdir), "--", "python", "search.py", how)
    job = job_id_of(run)
    logs = cli("logs", job, "--all").stdout
    assert run.code == 0, run.output + logs
    assert "DONE 0" in logs and "DONE 1" in logs
    assert "NoSuchModuleError" not in logs
    assert trial_nodes(nodes.nodes[0], study) == ['"0"', '"0"', '"1"', '"1"']


def test_turned_off_optuna_sees_the_uri_as_it_is(cli, nodes, tmp_path):
    workdir = tmp_path / "search"
    workdir.mkdir()
    (workdir / "search.py").write_text(TORCH_SUBMIT_SCRIPT)
    discovering_cluster(cli, nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--executor", "optuna", "--study", "contract-off", "--wait",
              "--env", "TSUBMIT_OPTUNA_URI=off", "--workdir", str(workdir), "--", "python", "search.py",
              "load")
    job = job_id_of(run)
    assert run.code == 1, run.output
    assert "Can't load plugin: sqlalchemy.dialects:grpc" in cli("logs", job).stdout
