"""The optuna_store role on real sshd nodes, with real Optuna, gRPC and PostgreSQL.

`tsubmit run --executor optuna` is wired by the submit path; these tests drive
the role directly: a small playbook that stands in for submit.yml (a fake
preflight_nodes fact, then `role: optuna_store`) runs through tsubmit's own
ansible-runner wrapper, and the workers are the example search run over real
ssh on other nodes with the environment the launch role gives them. The
maintenance steps run through the playbooks tsubmit ships: optuna_summary,
optuna_fetch, optuna_dashboard and optuna_release (through tsubmit/optuna.py),
stop.yml for the stop. The check and helper task files have no playbook of
their own (submit.yml includes them through playbooks/tasks/optuna_store.yml),
so two small test playbooks run each alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.harness.ci import missing  # scripts/setup.sh --test installs PostgreSQL: CI fails without
from tsubmit import ansible_env
from tsubmit.ansible_run import run_playbook
from tsubmit.errors import UsageError
from tsubmit.job import Job, Rank

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ROLE_FILES = REPO / "roles" / "optuna_store" / "files"
EXAMPLE = REPO / "examples" / "optuna" / "search.py"
START_TASK = "Start the store and create the study"
ENDPOINT_TASK = "Read the endpoint as the launch role would"

# The test stand-in for playbooks/submit.yml (preflight and launch replaced by
# a fact and a folder), and the maintenance playbooks tsubmit ships.
PLAYBOOKS = {
    "optuna_store_test": [{
        "name": "Start an Optuna store as the submit playbook does",
        "hosts": "tsubmit_nodes",
        "gather_facts": False,
        "any_errors_fatal": True,
        "pre_tasks": [
            {"name": "Stand in for the preflight role",
             "ansible.builtin.set_fact": {"preflight_nodes": (
                 "{{ {inventory_hostname: {'remote_root': tsubmit_remote_root, 'gpus': 1,"
                 " 'port': none}} }}")}},
            {"name": "Create the job's folder as the launch role would",
             "ansible.builtin.file": {"path": "{{ tsubmit_remote_root }}/{{ tsubmit_job_id }}",
                                      "state": "directory", "mode": "0755"}},
        ],
        "roles": [{"role": "optuna_store"}],
        "tasks": [
            {"name": ENDPOINT_TASK,
             "ansible.builtin.debug": {"msg": (
                 "{{ hostvars[tsubmit_job_nodes[0]].optuna_store_endpoint | dict2items"
                 " | rejectattr('key', 'eq', 'storage_url') | items2dict | combine({'has_storage_url':"
                 " hostvars[tsubmit_job_nodes[0]].optuna_store_endpoint.storage_url is not none}) }}")}},
        ],
    }],
    **{f"test_optuna_{entry}": [{
        "name": f"Optuna store: {entry}",
        "hosts": "tsubmit_nodes",
        "gather_facts": False,
        "tasks": [{"name": f"Run the optuna_store role's {entry} tasks",
                   "ansible.builtin.include_role": {"name": "optuna_store", "tasks_from": entry}}],
    }] for entry in ("check", "helper")},
}


@pytest.fixture
def home(tmp_path_factory, monkeypatch):
    """An isolated TSUBMIT_HOME, and tsubmit's playbook lookup extended with the test's."""
    folder = Path(tempfile.mkdtemp(prefix="tso-", dir="/tmp"))
    playbooks = folder / "playbooks"
    playbooks.mkdir()
    for name, content in PLAYBOOKS.items():
        (playbooks / f"{name}.yml").write_text(yaml.safe_dump(content, sort_keys=False))
    original = ansible_env.playbook
    monkeypatch.setenv("TSUBMIT_HOME", str(folder))
    monkeypatch.setattr(ansible_env, "playbook",
                        lambda name: playbooks / f"{name}.yml" if name in PLAYBOOKS else original(name))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Cluster:
    """The harness nodes as one inventory, and jobs started on them."""

    def __init__(self, nodes, home: Path):
        self.nodes = nodes
        self.home = home
        self.inventory = home / "inventory.yml"
        nodes.write_inventory(self.inventory)
        self.started: list[tuple[str, list]] = []

    def job(self, job_id: str, members) -> Job:
        return Job(id=job_id, name=job_id, cluster="test", inventory={"sources": [str(self.inventory)]},
                   executor="optuna", command=["python", "search.py"], workdir=str(REPO),
                   ranks=[Rank(rank, node.name, node.address) for rank, node in enumerate(members)])

    def start(self, members, *, study: str, job_id: str | None = None, direction: str = "minimize",
              storage: str | None = None, dashboard: bool = False, attempt: int = 1, **role_vars):
        """Run the role for a new job on MEMBERS (head first); (job id, run, endpoint or None)."""
        job_id = job_id or secrets.token_hex(5)
        hosts = {node.name: {"tsubmit_rank": rank, "tsubmit_node_address": node.address, **role_vars}
                 for rank, node in enumerate(members)}
        run = run_playbook("optuna_store_test", [str(self.inventory)], hosts, {
            "tsubmit_job_id": job_id, "tsubmit_job_name": f"job-{job_id}",
            "tsubmit_job_nodes": [node.name for node in members], "tsubmit_job_attempt": attempt,
            "tsubmit_job_optuna": {"study": study, "direction": direction, "storage": storage,
                                   "dashboard": dashboard},
        })
        self.started.append((job_id, list(members)))
        endpoint = None
        if not run.failures():
            endpoint = json.loads(run.hosts[members[0].name].results[START_TASK]["stdout"])
            # every node reads the head's fact, as the launch template does
            for node in members:
                seen = run.hosts[node.name].results[ENDPOINT_TASK]["msg"]
                assert seen == {"host": endpoint["host"], "port": endpoint["port"], "study": study,
                                "dashboard_port": endpoint["dashboard_port"],
                                "has_storage_url": storage is not None}
        return job_id, run, endpoint

    def run_entry(self, job_id: str, members, playbook: str, **extravars):
        hosts = {node.name: {"tsubmit_rank": rank} for rank, node in enumerate(members)}
        return run_playbook(playbook, [str(self.inventory)], hosts, {"tsubmit_job_id": job_id, **extravars})

    def stop(self, job_id: str, members):
        run = self.run_entry(job_id, members, "stop", tsubmit_job_executor="optuna")
        assert not run.failures(), run.failures()
        return run

    def store_dir(self, job_id: str, head) -> Path:
        return head.remote_root / job_id / "optuna"

    def cleanup(self) -> None:
        for job_id, members in self.started:
            if store_processes(self.nodes, members[0], job_id):
                with contextlib.suppress(Exception):
                    self.run_entry(job_id, members[:1], "stop", tsubmit_job_executor="optuna")


@pytest.fixture
def cluster(nodes, home):
    made = Cluster(nodes, home)
    yield made
    made.cleanup()


# --------------------------------------------------------------------------- helpers


def unique_study(prefix: str = "study") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def worker_dir(node, job_id: str, *, helper: bool = True) -> Path:
    """The job's tree on a node: the example (and the helper module), readable by the test user."""
    folder = node.remote_root / job_id / "workdir"
    folder.mkdir(parents=True, exist_ok=True)
    for source in (EXAMPLE, ROLE_FILES / "tsubmit_optuna.py") if helper else (EXAMPLE,):
        shutil.copy(source, folder / source.name)
    for path in (node.remote_root / job_id, folder):
        path.chmod(0o755)
    return folder


def worker_env(endpoint: dict, job_id: str, rank: int, storage: str | None = None) -> dict[str, str]:
    """What the launch role exports to an Optuna worker."""
    env = {"STUDY_NAME": endpoint["study"], "OPTUNA_STUDY_NAME": endpoint["study"],
           "TSUBMIT_JOB_ID": job_id, "NODE_RANK": str(rank), "WORLD_SIZE": "1",
           "MASTER_ADDR": "localhost", "OMP_NUM_THREADS": "1"}
    if storage:
        env.update(DATABASE_URI=storage, OPTUNA_STORAGE=storage)
    else:
        env.update(DATABASE_URI=f"grpc://{endpoint['host']}:{endpoint['port']}",
                   TSUBMIT_OPTUNA_GRPC_HOST=endpoint["host"],
                   TSUBMIT_OPTUNA_GRPC_PORT=str(endpoint["port"]))
    return env


def worker_command(nodes, node, job_id: str, env: dict[str, str], trials: int, *, script: str = "search.py",
                   pythonpath: str = ".") -> str:
    """The worker's command; its environment comes from a private file, as the launch
    script exports it, never on a command line (it may hold a database password)."""
    folder = worker_dir(node, job_id, helper=pythonpath == ".")
    env_file = folder / f"worker-{secrets.token_hex(4)}.env"
    env_file.write_text("".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()))
    env_file.chmod(0o600)
    os.chown(env_file, pwd.getpwnam(node.user).pw_uid, -1)
    return (f"cd {shlex.quote(str(folder))} && . {shlex.quote(str(env_file))} && "
            f"PYTHONPATH={shlex.quote(pythonpath)} "
            f"exec {shlex.quote(nodes.python)} {script} {trials}")


def run_worker(nodes, node, job_id: str, env: dict[str, str], trials: int, timeout: float = 240,
               pythonpath: str = "."):
    command = worker_command(nodes, node, job_id, env, trials, pythonpath=pythonpath)
    result = nodes.ssh(node, command, check=False, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def python_on(nodes, node, code: str, env: dict[str, str] | None = None, timeout: float = 60,
              job_id: str | None = None) -> str:
    """Run Python code on the node as the test user (so SQLite's -wal/-shm files stay the
    store's), with ENV from a private file and the job's tree on PYTHONPATH."""
    folder = worker_dir(node, job_id) if job_id else node.remote_root
    script = folder / f"snippet-{secrets.token_hex(4)}.py"
    script.write_text(code)
    script.chmod(0o644)
    command = f"{shlex.quote(nodes.python)} {shlex.quote(str(script))}"
    if env or job_id:
        command = worker_command(nodes, node, job_id or "scratch", env or {}, 0,
                                 script=shlex.quote(str(script))).rsplit(" ", 1)[0]
    result = nodes.ssh(node, command, check=False, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def trials_in_file(nodes, head, study_file: str, study: str) -> list[dict]:
    """The study's trials, read from the SQLite file itself on the head."""
    code = f"""
import json, sqlite3
db = sqlite3.connect({study_file!r}, timeout=30)
rows = db.execute("SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s "
                  "ON s.study_id = t.study_id WHERE s.study_name = ?", ({study!r},)).fetchall()
attrs = dict(db.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'node'"))
print(json.dumps([{{"number": n, "state": s, "node": json.loads(attrs[i]) if i in attrs else None}}
                  for i, n, s in rows]))
"""
    return json.loads(python_on(nodes, head, code))


def listener_address(port: int) -> str | None:
    """The address a LISTEN socket on PORT is bound to (/proc/net/tcp and tcp6; gRPC
    listens on an IPv4-mapped IPv6 socket, ::ffff:A.B.C.D, for an IPv4 address)."""
    for table_name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table_name) as table:
            next(table)
            for fields in (line.split() for line in table):
                address, _, hex_port = fields[1].partition(":")
                if fields[3] != "0A" or int(hex_port, 16) != port:
                    continue
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    return socket.inet_ntoa(raw[::-1] if sys.byteorder == "little" else raw)
                # /proc prints IPv6 as four host-order 32-bit words
                words = b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4]
                                 for i in range(0, 16, 4))
                text = socket.inet_ntop(socket.AF_INET6, words)
                return text.removeprefix("::ffff:")
    return None


def accepting(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def store_processes(nodes, head, job_id: str) -> list[str]:
    return [cmd for cmd in nodes.processes_of(head, r"optuna_store\.py (serve|watch|serve-dashboard) ")
            if f"/{job_id}/" in cmd]


def wait_until(condition, timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout}s")


def watchdog_saw(store: Path, line: str, timeout: float = 30) -> None:
    """Wait until the store's watchdog logged LINE: it then judged the ranks' files
    as the test left them, so a store still running afterwards stayed up on purpose."""
    wait_until(lambda: line in (store / "watchdog.log").read_text(), timeout=timeout,
               message=f"the watchdog logged {line!r}")


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def failure_line(run, host: str) -> str:
    message = run.failures()[host]
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --------------------------------------------------------------------------- the head-node store


def test_the_tests_own_playbooks_shadow_none_that_tsubmit_ships():
    shipped = {path.stem for path in (REPO / "playbooks").glob("*.yml")}
    assert not shipped & set(PLAYBOOKS)


def test_store_serves_one_study_to_workers_on_other_nodes(cluster, nodes, tmp_path):
    head, second, third = nodes.nodes
    study = unique_study("search")
    job_id, run, endpoint = cluster.start([head, second, third], study=study)
    assert not run.failures(), run.failures()

    # bound to the head's rendezvous address on the port it picked, never 0.0.0.0
    assert endpoint["host"] == head.address
    assert listener_address(endpoint["port"]) == head.address
    assert endpoint["study_file"] == str(head.remote_root / "optuna-studies" / f"{study}.db")
    store = cluster.store_dir(job_id, head)
    assert oct(store.stat().st_mode & 0o777) == "0o700"
    assert len(store_processes(nodes, head, job_id)) == 2  # server and watchdog, each its own session
    for name in ("server", "watchdog"):
        pid = read_pid(store / f"{name}.pid")
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    # nothing but the head ran anything
    for node in (second, third):
        assert not (node.remote_root / job_id / "optuna").exists()

    # the helper module, where the launch role puts it (tasks_from: helper) on every node
    run = cluster.run_entry(job_id, [head, second, third], "test_optuna_helper")
    assert not run.failures(), run.failures()
    for node in (second, third):
        helper = node.remote_root / job_id / "optuna-lib" / "tsubmit_optuna.py"
        assert helper.read_text() == (ROLE_FILES / "tsubmit_optuna.py").read_text()

    # two workers on the other nodes, in parallel, through GrpcStorageProxy
    threads = [threading.Thread(target=run_worker, args=(nodes, node, job_id,
                                                         worker_env(endpoint, job_id, rank), 4),
                                kwargs={"pythonpath": str(node.remote_root / job_id / "optuna-lib")})
               for rank, node in ((1, second), (2, third))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = trials_in_file(nodes, head, endpoint["study_file"], study)
    assert len(trials) == 8
    assert {t["state"] for t in trials} == {"COMPLETE"}
    assert sorted(t["node"] for t in trials) == ["1"] * 4 + ["2"] * 4

    # what `tsubmit status` and `tsubmit optuna fetch` read
    from tsubmit import optuna as optuna_ctl

    job = cluster.job(job_id, [head, second, third])
    summary = optuna_ctl.study_summary(job)
    assert summary["total"] == 8 and summary["trials"] == {"COMPLETE": 8}, summary
    assert summary["store"] == "running" and summary["endpoint"] == f"{head.address}:{endpoint['port']}"
    assert set(summary["best"]["params"]) == {"lr", "momentum"}
    assert any("best:" in line for line in optuna_ctl.format_summary(summary))
    fetched = optuna_ctl.fetch_study(job, tmp_path)
    assert Path(fetched["path"]) == tmp_path / f"{study}.db" and fetched["trials"] == 8
    import sqlite3

    with contextlib.closing(sqlite3.connect(fetched["path"])) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT COUNT(*) FROM trials").fetchone() == (8,)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    with pytest.raises(UsageError, match="exists; add --force"):
        optuna_ctl.fetch_study(job, fetched["path"])
    assert not list(store.glob("snapshot-*")), "the snapshot is removed from the head"

    cluster.stop(job_id, [head])
    assert store_processes(nodes, head, job_id) == []
    assert not accepting(head.address, endpoint["port"])
    assert optuna_ctl.study_summary(job)["store"] == "stopped"


def test_two_stores_at_once_and_a_taken_port(cluster, nodes):
    head, second = nodes.nodes[:2]
    first_id, run, first = cluster.start([head, second], study=unique_study("a"))
    assert not run.failures(), run.failures()
    _, run, other = cluster.start([head, second], study=unique_study("b"))
    assert not run.failures(), run.failures()
    assert first["port"] != other["port"]
    assert first["study_file"] != other["study_file"]
    assert listener_address(first["port"]) == listener_address(other["port"]) == head.address

    # A port held by a plain listener on the head's address: a clear failure.
    with socket.socket() as squatter:
        squatter.bind((head.address, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        job_id, run, _ = cluster.start([head, second], study=unique_study("c"), optuna_store_port=taken)
        message = failure_line(run, head.name)
        assert f"port {taken} on {head.address} is already in use by another process" in message
        assert "optuna_store_port" in message
        assert store_processes(nodes, head, job_id) == []
        assert listener_address(taken) == head.address  # still the squatter's alone

    # The port of another job's running gRPC store (which would share it, SO_REUSEPORT):
    # refused as well, and the first store still serves its own study alone.
    study = unique_study("d")
    job_id, run, _ = cluster.start([head, second], study=study, optuna_store_port=first["port"])
    assert "already in use" in failure_line(run, head.name)
    assert store_processes(nodes, head, job_id) == []
    run_worker(nodes, second, first_id, worker_env(first, first_id, 1), 2)
    assert len(trials_in_file(nodes, head, first["study_file"], first["study"])) == 2
    assert not (head.remote_root / "optuna-studies" / f"{study}.db").exists() or trials_in_file(
        nodes, head, str(head.remote_root / "optuna-studies" / f"{study}.db"), study) == []

    # The same study served by a second job at once: refused (one server per study file).
    job_id, run, _ = cluster.start([head, second], study=first["study"])
    assert f"study {first['study']} is already served" in failure_line(run, head.name)
    assert f"job {first_id}" in run.failures()[head.name]
    assert store_processes(nodes, head, job_id) == []


def test_watchdog_restarts_a_killed_server_and_the_search_finishes(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("kill"))
    assert not run.failures(), run.failures()
    store = cluster.store_dir(job_id, head)
    env = {**worker_env(endpoint, job_id, 1), "TRIAL_SECONDS": "0.5"}
    worker = subprocess.Popen(
        [*nodes.ssh_args(second), worker_command(nodes, second, job_id, env, 16)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: len(trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])) >= 3,
                   timeout=120, message="three trials")
        killed = read_pid(store / "server.pid")
        os.kill(killed, 9)
        restarted = wait_until(lambda: (read_pid(store / "server.pid") != killed
                                        and (store / "server.ready").exists()
                                        and accepting(head.address, endpoint["port"])
                                        and read_pid(store / "server.pid")),
                               timeout=60, message="the server restarted")
        assert listener_address(endpoint["port"]) == head.address  # the same port
        output, _ = worker.communicate(timeout=240)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert restarted != killed
    trials = trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])
    assert len([t for t in trials if t["state"] == "COMPLETE"]) == 16, trials
    assert "starting it again on the same port" in (store / "watchdog.log").read_text()


def test_stop_fails_running_trials_and_leaves_nothing_listening(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("stop"), dashboard=True)
    assert not run.failures(), run.failures()
    port, dashboard = endpoint["port"], endpoint["dashboard_port"]
    assert listener_address(dashboard) == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/studies", timeout=30) as answer:
        assert endpoint["study"] in answer.read().decode()
    assert len(store_processes(nodes, head, job_id)) == 3

    # a worker that asked for trials and never told: they stay RUNNING
    code = "import tsubmit_optuna; s = tsubmit_optuna.load_study(); [s.ask() for _ in range(2)]; print('ok')"
    python_on(nodes, second, code, worker_env(endpoint, job_id, 1), job_id=job_id)
    states = [t["state"] for t in trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])]
    assert states == ["RUNNING", "RUNNING"]

    run = cluster.stop(job_id, [head, second])
    report = json.loads(run.hosts[head.name].results["Stop the job's Optuna store"]["stdout"])
    assert report["failed_trials"] == 2
    assert report["stopped"] == ["watchdog", "dashboard", "server"]
    states = [t["state"] for t in trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])]
    assert states == ["FAIL", "FAIL"]
    assert store_processes(nodes, head, job_id) == []
    assert not accepting(head.address, port) and not accepting("127.0.0.1", dashboard)
    assert listener_address(port) is None and listener_address(dashboard) is None
    # stopping again does nothing and says nothing
    again = cluster.stop(job_id, [head, second])
    assert again.hosts[head.name].results["Stop the job's Optuna store"]["stdout"] == ""


def test_a_second_job_with_the_same_study_continues_it(cluster, nodes):
    head, second = nodes.nodes[:2]
    study = unique_study("nightly")
    first_id, run, first = cluster.start([head, second], study=study, direction="maximize")
    assert not run.failures(), run.failures()
    run_worker(nodes, second, first_id, worker_env(first, first_id, 1), 3)
    cluster.stop(first_id, [head])

    second_id, run, again = cluster.start([head, second], study=study, direction="maximize")
    assert not run.failures(), run.failures()
    assert again["study_file"] == first["study_file"]
    run_worker(nodes, second, second_id, worker_env(again, second_id, 1), 2)
    assert len(trials_in_file(nodes, head, again["study_file"], study)) == 5
    cluster.stop(second_id, [head])

    # the other direction is refused, in one line
    third_id, run, _ = cluster.start([head, second], study=study, direction="minimize")
    assert (f"study {study} already exists with direction maximize; run it with --direction maximize"
            in failure_line(run, head.name))
    assert store_processes(nodes, head, third_id) == []


def test_the_store_stops_by_itself_once_every_worker_ended(cluster, nodes):
    head, second = nodes.nodes[:2]
    # Ranks whose files the head sees (a shared remote root): their exit codes stop it.
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("auto"), dashboard=True)
    assert not run.failures(), run.failures()
    store = cluster.store_dir(job_id, head)
    for rank in (0, 1):
        attempt = head.remote_root / job_id / f"rank-{rank}" / "attempt-1"
        attempt.mkdir(parents=True)
        watchdog_saw(store, f"waiting for rank {rank}: starting")
        assert len(store_processes(nodes, head, job_id)) == 3, "a rank still runs"
        (attempt / "exit_code").write_text(f"0 {int(time.time())}\n")
    wait_until(lambda: store_processes(nodes, head, job_id) == [], timeout=30, message="the store stopped")
    ended = json.loads((store / "ended").read_text())
    assert ended["reason"] == "every worker ended" and ended["stopped"] == ["dashboard", "server"]
    assert not accepting(head.address, endpoint["port"])
    assert not accepting("127.0.0.1", endpoint["dashboard_port"])
    assert Path(endpoint["study_file"]).exists()

    # The head alone finished, the other rank's files are elsewhere: it keeps serving
    # until tsubmit reports that every worker ended (optuna_release).
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("release"))
    assert not run.failures(), run.failures()
    attempt = head.remote_root / job_id / "rank-0" / "attempt-1"
    attempt.mkdir(parents=True)
    (attempt / "exit_code").write_text(f"0 {int(time.time())}\n")
    watchdog_saw(cluster.store_dir(job_id, head), "waiting for rank 1: its folder is not on this node")
    assert len(store_processes(nodes, head, job_id)) == 2
    from tsubmit import optuna as optuna_ctl

    assert optuna_ctl.release_store(cluster.job(job_id, [head, second]))
    wait_until(lambda: store_processes(nodes, head, job_id) == [], timeout=30, message="the store stopped")
    assert "reported by tsubmit" in (cluster.store_dir(job_id, head) / "ended").read_text()

    # The job's folder removed (a failed launch rolled back): the store stops too.
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("gone"))
    assert not run.failures(), run.failures()
    nodes.ssh(head, f"rm -rf {shlex.quote(str(head.remote_root / job_id))}")
    wait_until(lambda: store_processes(nodes, head, job_id) == [], timeout=30, message="the store stopped")
    assert not accepting(head.address, endpoint["port"])


def test_dashboard_over_an_ended_study_is_forwarded_over_ssh(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("dash"))
    assert not run.failures(), run.failures()
    run_worker(nodes, second, job_id, worker_env(endpoint, job_id, 1), 2)
    cluster.stop(job_id, [head])

    from tsubmit import optuna as optuna_ctl

    job = cluster.job(job_id, [head, second])
    opened = optuna_ctl.open_dashboard(job)
    assert opened["started"] is True and listener_address(opened["port"]) == "127.0.0.1"
    assert optuna_ctl.open_dashboard(job) == {"port": opened["port"], "started": False}
    process, url = optuna_ctl.forward_dashboard(job, opened["port"])
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(f":{opened['port']}/")
        with urllib.request.urlopen(url + "api/studies", timeout=30) as answer:
            assert endpoint["study"] in answer.read().decode()
    finally:
        process.terminate()
        process.wait()
    optuna_ctl.close_dashboard(job)
    assert store_processes(nodes, head, job_id) == []
    assert not accepting("127.0.0.1", opened["port"])

    # a dashboard port that is taken: one clear line, nothing left running
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        job_id, run, _ = cluster.start([head, second], study=unique_study("dash"), dashboard=True,
                                       optuna_store_dashboard_port=taken)
        message = failure_line(run, head.name)
        assert f"dashboard port 127.0.0.1:{taken} is already in use" in message, message
        assert store_processes(nodes, head, job_id) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql://u:pw@/optuna", "no host"),
    ("postgresql://u:pw@db.example:5432", "no database name"),
    ("postgresql://u:p@ss@db.example/optuna", "percent-encode"),
    ("postgresql://u:pw@db.example:99999/optuna", "out of range"),
    ("postgres://u:pw@db.example/optuna", "postgresql, not postgres"),
    ("sqlite:////tmp/x.db", "head-node store"),
    ("grpc://10.0.0.1:13000", "head-node store"),
    ("redis://u:pw@db.example/0", "unsupported scheme"),
    ("postgresql://u:pw@db.example/opt una", "spaces"),
    ("db.example/optuna", "no scheme"),
])
def test_a_malformed_storage_url_is_one_line_without_the_password(url, reason):
    from tsubmit.optuna import validate_storage_url

    with pytest.raises(UsageError) as raised:
        validate_storage_url(url)
    message = str(raised.value)
    assert reason in message and "\n" not in message
    assert ":pw@" not in message and "p@ss" not in message


def test_named_storages_are_private_and_masked(home):
    import click
    from click.testing import CliRunner

    from tsubmit import optuna as optuna_ctl
    from tsubmit.cli import _Group
    from tsubmit.cli.optuna import db

    @click.group(cls=_Group)
    def root():
        pass

    root.add_command(db)
    runner = CliRunner()
    url = "postgresql://alice:s3cr%40t-pw@db.example:5432/optuna"
    added = runner.invoke(root, ["db", "add", "prod", url])
    assert added.exit_code == 0, added.output
    assert "s3cr" not in added.output and "alice:***@db.example" in added.output
    path = optuna_ctl.storages_file()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(path.read_text()) == {"prod": url}
    # the URL can come on stdin, out of the shell history
    added = runner.invoke(root, ["db", "add", "dev"], input="mysql+pymysql://bob:hunter2@db2/optuna\n")
    assert added.exit_code == 0, added.output
    listed = runner.invoke(root, ["db", "list"])
    assert listed.exit_code == 0
    assert "s3cr" not in listed.output and "hunter2" not in listed.output
    assert "prod" in listed.output and "mysql+pymysql://bob:***@db2/optuna" in listed.output
    assert optuna_ctl.resolve_storage("prod") == url
    assert optuna_ctl.resolve_storage(None) is None
    assert optuna_ctl.resolve_storage(url) == url
    again = runner.invoke(root, ["db", "add", "prod", url])
    assert again.exit_code == 2 and "--replace" in again.output and "s3cr" not in again.output
    bad = runner.invoke(root, ["db", "add", "x", "postgresql://u:topsecret@/optuna"])
    assert bad.exit_code == 2 and "no host" in bad.output and "topsecret" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="no Optuna storage named nope"):
        optuna_ctl.resolve_storage("nope")
    removed = runner.invoke(root, ["db", "remove", "prod"])
    assert removed.exit_code == 0 and "s3cr" not in removed.output
    assert runner.invoke(root, ["db", "remove", "prod"]).exit_code == 2
    assert list(yaml.safe_load(path.read_text())) == ["dev"]
    with pytest.raises(UsageError, match="minimize or maximize"):
        optuna_ctl.check_direction("up")


def test_missing_optuna_on_the_head_or_a_node_names_the_packages(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, _ = cluster.start([head, second], study=unique_study("bare"),
                                   optuna_store_python="/usr/bin/python3")
    message = failure_line(run, head.name)
    assert "optuna is not installed for /usr/bin/python3 on this node" in message
    assert "optuna>=4.2, grpcio and protobuf" in message
    assert store_processes(nodes, head, job_id) == []
    hosts = {node.name: {"tsubmit_rank": rank, "optuna_store_python": "/usr/bin/python3"}
             for rank, node in enumerate((head, second))}
    run = run_playbook("test_optuna_check", [str(cluster.inventory)], hosts, {
        "tsubmit_job_id": job_id,
        "tsubmit_job_optuna": {"study": "s", "direction": "minimize", "storage": None}})
    for node in (head, second):
        message = failure_line(run, node.name)
        # (the system python has protobuf, not optuna or grpcio)
        assert "missing for /usr/bin/python3 on this node: optuna>=4.2, grpcio (pip install " in message
    run = run_playbook("test_optuna_check", [str(cluster.inventory)],
                       {head.name: {"tsubmit_rank": 0}}, {
                           "tsubmit_job_id": job_id,
                           "tsubmit_job_optuna": {"study": "s", "direction": "minimize", "storage": None}})
    assert not run.failures()


# --------------------------------------------------------------------------- an external PostgreSQL


PG_BIN = Path("/usr/lib/postgresql")


def pg_bin(name: str) -> str:
    found = sorted(PG_BIN.glob(f"*/bin/{name}"))
    if not found:
        missing("PostgreSQL is not installed (apt-get install -y postgresql)")
    return str(found[-1])


@pytest.fixture
def postgres():
    """A real PostgreSQL server on a loopback port, run as the postgres user: (url, password)."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing("no postgres user (apt-get install -y postgresql)")
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="tsubmit-pg-", dir="/tmp"))
    account = pwd.getpwnam("postgres")
    os.chown(folder, account.pw_uid, account.pw_gid)
    data, sockets, log = folder / "data", folder / "sock", folder / "server.log"

    def as_postgres(*argv, **options):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              timeout=120, check=True, **options)

    as_postgres(initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", "--no-sync")
    as_postgres("mkdir", "-m", "0700", str(sockets))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    as_postgres(pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    password = f"Pg-{secrets.token_hex(8)}"
    try:
        # the password goes over stdin, so no process listing of this test shows it either
        as_postgres("psql", "-h", str(sockets), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                    input=f"CREATE ROLE tsu LOGIN PASSWORD '{password}';\n"
                          "CREATE DATABASE optuna OWNER tsu;\n")
        yield f"postgresql://tsu:{password}@127.0.0.1:{port}/optuna", password
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl, "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


class ProcessWatch:
    """Samples every process's command line while it runs (`ps -eo args`)."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
            self.seen.update(listing.stdout.splitlines())
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def files_holding(folder: Path, secret: str) -> list[str]:
    return [str(path) for path in folder.rglob("*")
            if path.is_file() and secret.encode() in path.read_bytes()]


def test_external_postgresql_storage_keeps_the_password_secret(cluster, nodes, postgres, home, tmp_path):
    import psycopg

    url, password = postgres
    head, second, third = nodes.nodes
    study = unique_study("pg")
    members = [head, second, third]
    with ProcessWatch() as watch:
        job_id, run, endpoint = cluster.start(members, study=study, storage=url, dashboard=True)
        assert not run.failures(), run.failures()
        assert endpoint["host"] is None and endpoint["port"] is None and endpoint["study_file"] is None
        store = cluster.store_dir(job_id, head)
        assert oct((store / "storage-url").stat().st_mode & 0o777) == "0o600"
        # only the dashboard and its watchdog run on the head; no gRPC store
        assert len(store_processes(nodes, head, job_id)) == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint['dashboard_port']}/api/studies",
                                    timeout=30) as answer:
            assert study in answer.read().decode()

        threads = [threading.Thread(target=run_worker, args=(nodes, node, job_id,
                                                             worker_env(endpoint, job_id, rank, url), 3))
                   for rank, node in ((1, second), (2, third))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # a trial this job left RUNNING, and one of another job on the same database
        ask = "import tsubmit_optuna; tsubmit_optuna.load_study().ask(); print('ok')"
        python_on(nodes, second, ask, worker_env(endpoint, job_id, 1, url), job_id=job_id)
        python_on(nodes, third, ask, worker_env(endpoint, "otherjob", 2, url), job_id=job_id)

        from tsubmit import optuna as optuna_ctl

        job = cluster.job(job_id, members)
        summary = optuna_ctl.study_summary(job)
        assert summary["storage"] == "external" and summary["total"] == 8, summary
        assert summary["trials"] == {"COMPLETE": 6, "RUNNING": 2}
        fetched = optuna_ctl.fetch_study(job, tmp_path / "copy.db")
        assert fetched["trials"] == 8
        run = cluster.stop(job_id, [head])
        report = json.loads(run.hosts[head.name].results["Stop the job's Optuna store"]["stdout"])
        assert report["failed_trials"] == 1 and report["stopped"] == ["watchdog", "dashboard"]
        assert store_processes(nodes, head, job_id) == []

    with psycopg.connect(url) as database, database.cursor() as cursor:
        cursor.execute("SELECT t.state, a.value_json FROM trials t JOIN studies s USING (study_id) "
                       "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'node' "
                       "WHERE s.study_name = %s", (study,))
        rows = cursor.fetchall()
    states = sorted(state for state, _ in rows)
    assert states == ["COMPLETE"] * 6 + ["FAIL", "RUNNING"]  # the other job's trial is left alone
    assert sorted(json.loads(node) for state, node in rows if state == "COMPLETE") == ["1"] * 3 + ["2"] * 3

    # the password: never on a command line, in runner artifacts, or in the store's logs
    assert not [line for line in watch.seen if password in line]
    assert files_holding(home / "state", password) == []
    assert files_holding(store, password) == [str(store / "storage-url")]
    for node in members:
        logs = [p for p in (node.remote_root / job_id).rglob("*.log")]
        assert not [p for p in logs if password in p.read_text(errors="replace")]


def test_an_unreachable_or_refusing_database_is_one_line_without_the_password(cluster, nodes, postgres,
                                                                              home):
    url, password = postgres
    head, second = nodes.nodes[:2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    port = re.search(r":(\d+)/", url).group(1)
    unreachable = url.replace(f":{port}/", f":{closed}/")
    job_id, run, _ = cluster.start([head, second], study=unique_study("pg"), storage=unreachable)
    message = failure_line(run, head.name)
    assert message.startswith(f"cannot reach the external Optuna storage postgresql://tsu:***@127.0.0.1:{closed}"
                              "/optuna: ")
    assert "Connection refused" in message and password not in message
    assert not (head.remote_root / job_id / "optuna" / "watchdog.pid").exists()
    wrong = url.replace(password, password[::-1])
    job_id, run, _ = cluster.start([head, second], study=unique_study("pg"), storage=wrong)
    message = failure_line(run, head.name)
    assert "password authentication failed" in message, message
    assert password[::-1] not in message and password not in message
    assert store_processes(nodes, head, job_id) == []
    assert files_holding(home / "state", password) == []
    assert files_holding(home / "state", password[::-1]) == []
