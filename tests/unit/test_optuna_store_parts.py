"""The pure parts of the optuna_store role's node-side scripts, and the shape of
the split: what the tasks ship is what the scripts import, no file over ~500
lines, Optuna's private API behind one function."""

import ast
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.harness import eventually
from tsubmit.model import layout

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "roles" / "optuna_store" / "files"
NODE_LIB = REPO / "roles" / "node_lib" / "files"
sys.path[:0] = [str(FILES), str(NODE_LIB)]

import optuna_store  # noqa: E402 - the node-side modules, from the role's files
import store_study  # noqa: E402
from tsubmit_procs import is_ours, read_pid, start_ticks  # noqa: E402

STORE_MODULES = sorted(path.name for path in FILES.glob("store_*.py"))
ACTION = REPO / "plugins" / "action" / "optuna_store.py"


def shipped_names() -> list[str]:
    """What the tsubmit.cluster.optuna_store action ships beside optuna_store.py."""
    tree = ast.parse(ACTION.read_text())
    values = {target.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
              for target in node.targets if isinstance(target, ast.Name) and target.id.endswith("_FILES")}
    return [*values["OWN_FILES"], *values["SHARED_FILES"]]


def test_the_action_ships_every_module_the_store_imports():
    shipped = shipped_names()
    assert sorted(shipped) == sorted([*STORE_MODULES, "tsubmit_procs.py", "tsubmit_optuna_grpc.py",
                                      "stop.sh"])
    local = {Path(name).stem for name in [*shipped, "optuna_store.py"]}
    for path in [FILES / "optuna_store.py", *(FILES / name for name in STORE_MODULES)]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.startswith(("store_", "tsubmit", "optuna_store")):
                    assert name in local, f"{path.name} imports {name}, which the action does not ship"


def test_every_task_acts_on_the_store_through_the_action():
    """The store's paths come from the launch contract (the action), none from the role."""
    assert not (REPO / "roles/optuna_store/vars").exists()
    for path in (REPO / "roles/optuna_store/tasks").glob("*.yml"):
        for task in _tasks(yaml.safe_load(path.read_text())):
            assert not {"ansible.builtin.script", "tsubmit.cluster.run_script"} & set(task), path.name
            assert "optuna_store_job_dir" not in json.dumps(task), path.name


def _tasks(tasks):
    for task in tasks or []:
        yield task
        for key in ("block", "always", "rescue"):
            yield from _tasks(task.get(key))


@pytest.mark.parametrize("path", sorted([*FILES.glob("*.py"), *NODE_LIB.glob("*.py")]), ids=lambda p: p.name)
def test_no_node_side_file_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


def test_the_launch_ships_every_module_the_workers_import():
    """tsubmit_optuna.py and sitecustomize.py import tsubmit_optuna_grpc.py beside
    them: the launch ships every helper the contract names into optuna-lib/."""
    shipped = set(layout.OPTUNA_HELPERS)
    for name in shipped:
        assert (FILES / name).is_file(), name
    for name in shipped:
        for node in ast.walk(ast.parse((FILES / name).read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module])
                for module in names:
                    if (module or "").startswith("tsubmit"):
                        assert f"{module}.py" in shipped, f"{name} imports {module}, not shipped"


def test_optunas_private_api_is_in_one_file_one_piece_a_side():
    """Imports of optuna's underscore modules and underscore attributes of its
    objects, in every node-side file (the store's and the workers'): only in
    tsubmit_optuna_grpc.py, the servicer (add_storage_service) and the patient
    client (PatientProxy)."""
    found = []
    for path in FILES.glob("*.py"):
        for part in ast.parse(path.read_text()).body:
            name = part.name if isinstance(part, ast.FunctionDef | ast.ClassDef) else "<module>"
            for node in ast.walk(part):
                private = (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna")
                           and any(part.startswith("_") for part in node.module.split(".")))
                private = private or (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                                      and not node.attr.startswith("__") and node.attr != "_tsubmit")
                if private:
                    found.append((path.name, name))
    assert set(found) == {("tsubmit_optuna_grpc.py", "add_storage_service"),
                          ("tsubmit_optuna_grpc.py", "PatientProxy")}


# --------------------------------------------------------------------------- the parts


def test_the_study_file_keeps_safe_names_and_hashes_others():
    """The study's SQLite file is the launch contract's (layout.study_file)."""
    assert layout.study_file("resnet-lr.search_1", "/R") == "/R/optuna-studies/resnet-lr.search_1.db"
    assert layout.study_file("s", "/R", "/data/studies/") == "/data/studies/s.db"
    odd = Path(layout.study_file("../my study/ü", "/R"))
    assert odd.parent == Path("/R/optuna-studies") and odd.name.startswith("my_study") and len(odd.name) <= 74
    assert odd != Path(layout.study_file("../my study/u", "/R"))  # the hash tells them apart
    assert Path(layout.study_file("...", "/R")).name.startswith("study-")


def test_grpc_target_brackets_ipv6():
    assert store_study.grpc_target("127.0.0.1", 5) == "127.0.0.1:5"
    assert store_study.grpc_target("::1", 5) == "[::1]:5"


def test_a_taken_port_and_a_foreign_address_are_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(store_study.StoreError, match=f"^port {port} on 127.0.0.1 is already in use by "
                                                         "another process$"):
            store_study.probe_port("127.0.0.1", port, check=True)
    with pytest.raises(store_study.StoreError, match="is not an address of this node"):
        store_study.probe_port("192.0.2.1", 0)
    free = store_study.probe_port("127.0.0.1", 0)
    assert store_study.probe_port("127.0.0.1", free, check=True) == free


def test_a_start_that_failed_is_named_by_the_last_error_of_its_log(tmp_path):
    config = {"dir": str(tmp_path), "attempt": 1, "job_id": "J"}
    here = Path(optuna_store.process_dir(config, "store"))
    here.mkdir(parents=True)
    (here / "exit_code").write_text("1 1\n")
    assert optuna_store.wait_ready(config, "store", 5) == "no output"
    log = here / "output.log"
    log.write_text("just this\n")
    assert optuna_store.wait_ready(config, "store", 5) == "just this"
    log.write_text("2026 started\n2026 ERROR first\nnoise\n2026 ERROR port 5 is taken\ntraceback\n")
    assert optuna_store.wait_ready(config, "store", 5) == "port 5 is taken"


def test_write_private_is_0600_and_atomic(tmp_path):
    target = tmp_path / "store.json"
    optuna_store.write_private(str(target), "one")
    optuna_store.write_private(str(target), "two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]


def _shipped(folder: Path) -> Path:
    """The files the action ships, as run_script places them in its folder."""
    folder.mkdir()
    sources = {"tsubmit_procs.py": NODE_LIB, "stop.sh": REPO / "roles" / "stop" / "files"}
    for name in [*shipped_names(), "optuna_store.py"]:
        shutil.copyfile(sources.get(name, FILES) / name, folder / name)
    return folder


def test_script_copy_keeps_every_module_and_the_copy_runs(tmp_path):
    """The detached process runs from the job's folder once the task's copy is gone."""
    shipped = _shipped(tmp_path / "task")
    folder = tmp_path / "job" / "optuna"
    folder.mkdir(parents=True)
    code = "import optuna_store, sys; optuna_store.script_copy(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(folder)], cwd=shipped, check=True,
                   env={**os.environ, "PYTHONPATH": str(shipped)})
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in shipped.glob("*.py"))
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    shutil.rmtree(shipped)
    checked = subprocess.run([sys.executable, str(folder / "optuna_store.py"), "check", "{}"],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and json.loads(checked.stdout) == {"ok": True}, checked.stderr
    usage = subprocess.run([sys.executable, str(folder / "optuna_store.py"), "nonsense"],
                           capture_output=True, text=True)
    assert usage.returncode == 1 and "optuna_store.py start JSON" in usage.stderr


def _marked(marker: str) -> list[int]:
    from tsubmit_procs import marked_processes

    return marked_processes().get(marker, [])


def test_the_store_is_a_managed_process_started_again_and_stopped_as_a_rank(tmp_path):
    """No supervisor of its own: its pid with its start time, its marker on every
    process (what stop.sh finds a rank by), started again by its shell when
    killed, stopped by stop.sh, its stop failing the trials left RUNNING."""
    shipped = _shipped(tmp_path / "task")
    job = tmp_path / "J1"
    job.mkdir()
    options = {"dir": str(job / "optuna"), "job_dir": str(job), "job_id": "J1", "attempt": 1, "grace": 5,
               "timeout": 60, "rank_attempt_dir": str(job / "rank-%d" / "attempt-1"), "study": "s",
               "direction": "minimize", "address": "127.0.0.1", "port": 0, "nodes": 1,
               "study_file": str(tmp_path / "studies" / "s.db")}

    def act(action: str, given: dict) -> str:
        done = subprocess.run([sys.executable, str(shipped / "optuna_store.py"), action, json.dumps(given)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    endpoint = json.loads(act("start", options))
    here = job / "optuna" / "store" / "attempt-1"
    try:
        assert is_ours(read_pid(str(here / "pid")))
        assert len(_marked("J1.rstore.a1")) == 2  # the shell that keeps it up, and the store
        server = int((here / "ready").read_text())
        os.kill(server, 9)
        eventually(lambda: (here / "ready").exists() and int((here / "ready").read_text()) != server,
                   interval=0.1, message="the store started again (a new pid in ready)",
                   detail=lambda: (here / "output.log").read_text())
        assert "starting it again on the same port" in (here / "output.log").read_text()
        import optuna

        proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=endpoint["port"])
        optuna.load_study(study_name="s", storage=proxy).ask()  # a trial left RUNNING
        proxy.close()
        report = json.loads(act("stop", options))
    finally:
        subprocess.run(["/bin/sh", str(REPO / "roles/stop/files/stop.sh"), str(job / "optuna" / "store"),
                        "J1", "store", "1"], capture_output=True)
    assert report["stopped"] == ["store"] and report["failed_trials"] == 1
    assert _marked("J1.rstore.a1") == []
    assert act("stop", options) == ""  # a second stop does nothing and says nothing


def test_the_starter_waits_for_the_ready_file_the_server_writes(tmp_path):
    """The serve process marks itself ready in its process folder; the starter waits for
    that file, or for the end the shell records when the first start failed."""
    config = {"dir": str(tmp_path), "attempt": 1, "job_id": "J"}
    here = Path(optuna_store.process_dir(config, "store"))
    here.mkdir(parents=True)
    (here / "ready").write_text("1\n")
    assert optuna_store.wait_ready(config, "store", 5) is None
    (here / "ready").unlink()
    (here / "output.log").write_text("2026 ERROR port 5 on 127.0.0.1 is already in use by another process\n")
    (here / "exit_code").write_text("3 1\n")
    assert optuna_store.wait_ready(config, "store", 5) == (
        "port 5 on 127.0.0.1 is already in use by another process")


def test_need_config_names_the_missing_folder(tmp_path):
    with pytest.raises(store_study.StoreError, match=r"no Optuna store for this job on this node \(.*optuna"):
        optuna_store.load_config(str(tmp_path / "job" / "optuna"))


def test_an_external_url_is_read_from_its_file_only(tmp_path):
    with pytest.raises(store_study.StoreError, match="is missing or empty"):
        store_study.read_url(str(tmp_path / "storage-url"))
    (tmp_path / "storage-url").write_text("postgresql://u:pw@h/d\n")
    config = {"kind": "external", "url_file": str(tmp_path / "storage-url")}
    assert store_study.url_or_none(config) == "postgresql://u:pw@h/d"
    assert store_study.url_or_none({"kind": "head"}) is None


# --------------------------------------------------------------------------- workers_ended


ATTEMPT = 1


def _config(tmp_path, nodes=2) -> dict:
    """What start saves for the store, with the ranks' folders as the action names them."""
    job_dir = tmp_path / "job%s"  # a % in the path is the path's, not the rank's
    (job_dir / "optuna").mkdir(parents=True)
    return {"dir": str(job_dir / "optuna"), "job_dir": str(job_dir), "nodes": nodes,
            "rank_attempt_dir": layout.rank_attempts(job_dir.name, ATTEMPT, str(job_dir.parent))}


def _attempt(config, rank) -> Path:
    # Where layout.py puts the attempt: the watchdog must find the ranks there.
    job_dir = Path(config["job_dir"])
    folder = Path(layout.attempt_dir(job_dir.name, rank, ATTEMPT, str(job_dir.parent)))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_workers_ended_waits_for_every_rank(tmp_path):
    config = _config(tmp_path)
    assert optuna_store.workers_state(config)[0] is None  # no rank folder seen yet
    (_attempt(config, 0) / "exit_code").write_text("0 1\n")
    assert optuna_store.workers_state(config)[0] is None  # rank 1 not seen (another node's disk)
    (_attempt(config, 1) / "stopped").write_text("1\n")
    assert optuna_store.workers_state(config)[0] == "every worker ended"


def test_a_rank_whose_process_is_gone_has_ended_and_a_live_one_has_not(tmp_path):
    config = _config(tmp_path, nodes=1)
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ticks = start_ticks(process.pid)
        (_attempt(config, 0) / "pid").write_text(f"{process.pid} {ticks} {int(time.time())}\n")
        assert optuna_store.workers_state(config)[0] is None
    finally:
        process.kill()
        process.wait()
    assert optuna_store.workers_state(config)[0] == "every worker ended"


def test_the_watchdog_says_which_rank_it_waits_for(tmp_path):
    config = _config(tmp_path)
    assert optuna_store.workers_state(config) == (
        None, "rank 0: its folder is not on this node (tsubmit reports when it ends)")
    attempt = _attempt(config, 0)
    assert optuna_store.workers_state(config) == (None, "rank 0: starting")
    (attempt / layout.PID).write_text(f"{os.getpid()} {start_ticks(os.getpid())} 0\n")
    assert optuna_store.workers_state(config) == (None, f"rank 0: running (pid {os.getpid()})")
    (attempt / layout.EXIT_CODE).write_text("0 1\n")
    assert optuna_store.workers_state(config)[1].startswith("rank 1: its folder is not on this node")


def test_release_ends_the_workers_whatever_the_files_say(tmp_path):
    config = _config(tmp_path)
    (Path(config["dir"]) / "workers-ended").write_text("1\n")
    assert optuna_store.workers_state(config)[0] == "every worker ended (reported by tsubmit)"


# --------------------------------------------------------------------------- store_study, on real Optuna


@pytest.fixture
def storage():
    optuna = store_study.quiet_optuna()
    return optuna.storages.InMemoryStorage()


def test_ensure_study_refuses_the_other_direction(storage):
    study_id = store_study.ensure_study(storage, "s", "minimize")
    assert store_study.ensure_study(storage, "s", "minimize") == study_id
    with pytest.raises(store_study.StoreError, match="already exists with direction minimize; run it with "
                                                    "--direction minimize or choose another --study"):
        store_study.ensure_study(storage, "s", "maximize")


def test_fail_running_trials_only_the_jobs_when_asked(storage):
    optuna = store_study.quiet_optuna()
    study = optuna.create_study(storage=storage, study_name="s")
    ours, theirs, done = study.ask(), study.ask(), study.ask()
    study_id = storage.get_study_id_from_name("s")
    for trial, job in ((ours, "job-a"), (theirs, "job-b")):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_system_attr(trial_id, "tsubmit:job", job)
    study.tell(done, 1.0)
    only_job_a = {"study": "s", "kind": "external", "job_id": "job-a"}
    assert store_study.fail_running_trials(only_job_a, storage) == 1
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {ours.number: "FAIL", theirs.number: "RUNNING", done.number: "COMPLETE"}
    assert store_study.fail_running_trials({"study": "s", "kind": "head"}, storage) == 1
    assert store_study.fail_running_trials({"study": "no such study", "kind": "head"}, storage) == 0


@pytest.mark.parametrize(("direction", "best"), [("minimize", 1.0), ("maximize", 3.0)])
def test_summarize_counts_states_and_picks_the_best(storage, direction, best):
    optuna = store_study.quiet_optuna()
    study = optuna.create_study(storage=storage, study_name="s", direction=direction)
    for value in (2.0, 1.0, 3.0):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 10)})
        study.tell(trial, value)
    study.ask()
    summary = store_study.summarize(storage, "s", direction)
    assert summary["trials"] == {"COMPLETE": 3, "RUNNING": 1} and summary["total"] == 4
    assert summary["best"]["value"] == best and set(summary["best"]["params"]) == {"x"}


def test_a_missing_driver_names_its_pip_package():
    assert store_study.driver_problem("postgresql+pg8000://u@h/d") in (None, "pg8000")
    assert store_study.driver_problem("mysql+mysqldb://u@h/d") in (None, "mysqlclient")


def test_a_store_started_again_after_its_workers_ended_ends_at_once(tmp_path):
    """The workers may end while the store is down (its restarts failing): it then
    serves nothing, fails what was left RUNNING and says why it ended."""
    config = _config(tmp_path, nodes=1)
    (_attempt(config, 0) / "exit_code").write_text("0 1\n")
    study_file = tmp_path / "s.db"
    optuna = store_study.quiet_optuna()
    optuna.create_study(storage=f"sqlite:///{study_file}", study_name="s").ask()
    config.update(kind="head", study="s", job_id="J", attempt=1, dashboard=False, study_file=str(study_file))
    optuna_store.save_config(config)
    optuna_store.serve(config["dir"], "store")
    ended = json.loads((Path(config["dir"]) / "ended").read_text())
    assert ended["reason"] == "every worker ended" and ended["failed_trials"] == 1 and ended["stopped"] == []
