"""The optuna_store role on real sshd nodes, with real Optuna and gRPC: the head-node store.

`tsubmit run --executor optuna` is wired by the submit path; these tests drive
the role directly (tests/harness/optuna_role.py: a stand-in for submit.yml through
tsubmit's own ansible-runner wrapper, and the example search as workers over real
ssh on other nodes). The maintenance steps run through the playbooks tsubmit ships:
optuna_summary, optuna_fetch, optuna_dashboard and optuna_release (through
tsubmit/optuna/), stop.yml for the stop. The check and helper task files have no
playbook of their own (submit.yml includes them through
playbooks/tasks/optuna_store.yml), so two small test playbooks run each alone.
An external PostgreSQL storage: test_optuna_store_postgres.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.harness import eventually, optuna_role
from tests.harness.jobs import attempt_dir
from tests.harness.optuna_role import (
    PLAYBOOKS,
    REPO,
    failure_line,
    listener_address,
    place_helpers,
    python_on,
    read_pid,
    run_worker,
    store_log,
    store_processes,
    trials_in_file,
    unique_study,
    watchdog_saw,
    worker_command,
    worker_env,
)
from tests.harness.processes import listening
from tsubmit.errors import UsageError
from tsubmit.nodes.ansible_run import run_playbook

pytestmark = pytest.mark.e2e

# the shared fixtures, by name, so that pytest finds them in this module
home = optuna_role.home
cluster = optuna_role.cluster

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
    assert len(store_processes(nodes, head, job_id)) == 2  # the store and the shell that keeps it up
    pid = read_pid(store / "store" / "attempt-1" / "pid")  # as a rank's: in its own session
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    # nothing but the head ran anything
    for node in (second, third):
        assert not (node.remote_root / job_id / "optuna").exists()

    # two workers on the other nodes, in parallel, through GrpcStorageProxy, with the
    # helper modules where the launch puts them
    threads = [threading.Thread(target=run_worker, args=(nodes, node, job_id,
                                                         worker_env(endpoint, job_id, rank), 4),
                                kwargs={"pythonpath": str(place_helpers(node, job_id))})
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
    from tsubmit.optuna import study as optuna_study

    job = cluster.job(job_id, [head, second, third])
    summary = optuna_study.study_summary(job)
    assert summary["total"] == 8 and summary["trials"] == {"COMPLETE": 8}, summary
    assert summary["store"] == "running" and summary["endpoint"] == f"{head.address}:{endpoint['port']}"
    assert set(summary["best"]["params"]) == {"lr", "momentum"}
    assert any("best:" in line for line in optuna_study.format_summary(summary))
    fetched = optuna_study.fetch_study(job, tmp_path)
    assert Path(fetched["path"]) == tmp_path / f"{study}.db" and fetched["trials"] == 8
    import sqlite3

    with contextlib.closing(sqlite3.connect(fetched["path"])) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT COUNT(*) FROM trials").fetchone() == (8,)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    with pytest.raises(UsageError, match="exists; add --force"):
        optuna_study.fetch_study(job, fetched["path"])
    assert not list(store.glob("snapshot-*")), "the snapshot is removed from the head"

    cluster.stop(job_id, [head])
    assert store_processes(nodes, head, job_id) == []
    assert not listening(head.address, endpoint["port"])
    assert optuna_study.study_summary(job)["store"] == "stopped"


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
        eventually(lambda: len(trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])) >= 3,
                   timeout=120, message="three trials")
        ready = store / "store" / "attempt-1" / "ready"  # "PID" of the store, once it listens
        killed = read_pid(ready)
        os.kill(killed, 9)
        restarted = eventually(lambda: (ready.exists() and read_pid(ready) != killed
                                        and listening(head.address, endpoint["port"])
                                        and read_pid(ready)),
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
    assert "starting it again on the same port" in store_log(store).read_text()


def test_stop_fails_running_trials_and_leaves_nothing_listening(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("stop"), dashboard=True)
    assert not run.failures(), run.failures()
    port, dashboard = endpoint["port"], endpoint["dashboard_port"]
    assert listener_address(dashboard) == "127.0.0.1"
    with urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/studies", timeout=30) as answer:
        assert endpoint["study"] in answer.read().decode()
    assert len(store_processes(nodes, head, job_id)) == 2  # one process serves both

    # a worker that asked for trials and never told: they stay RUNNING
    code = "import tsubmit_optuna; s = tsubmit_optuna.load_study(); [s.ask() for _ in range(2)]; print('ok')"
    python_on(nodes, second, code, worker_env(endpoint, job_id, 1), job_id=job_id)
    states = [t["state"] for t in trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])]
    assert states == ["RUNNING", "RUNNING"]

    run = cluster.stop(job_id, [head, second])
    report = json.loads(run.hosts[head.name].results["Stop the job's Optuna store"]["stdout"])
    assert report["failed_trials"] == 2
    assert report["stopped"] == ["store"]
    states = [t["state"] for t in trials_in_file(nodes, head, endpoint["study_file"], endpoint["study"])]
    assert states == ["FAIL", "FAIL"]
    assert store_processes(nodes, head, job_id) == []
    assert not listening(head.address, port) and not listening("127.0.0.1", dashboard)
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
        attempt = attempt_dir(head, job_id, rank)
        attempt.mkdir(parents=True)
        watchdog_saw(store, f"waiting for rank {rank}: starting")
        assert len(store_processes(nodes, head, job_id)) == 2, "a rank still runs"
        (attempt / "exit_code").write_text(f"0 {int(time.time())}\n")
    eventually(lambda: store_processes(nodes, head, job_id) == [], timeout=30, message="the store stopped")
    ended = json.loads((store / "ended").read_text())
    assert ended["reason"] == "every worker ended" and ended["stopped"] == ["dashboard", "server"]
    assert not listening(head.address, endpoint["port"])
    assert not listening("127.0.0.1", endpoint["dashboard_port"])
    assert Path(endpoint["study_file"]).exists()

    # The head alone finished, the other rank's files are elsewhere: it keeps serving
    # until tsubmit reports that every worker ended (optuna_release).
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("release"))
    assert not run.failures(), run.failures()
    attempt = attempt_dir(head, job_id)
    attempt.mkdir(parents=True)
    (attempt / "exit_code").write_text(f"0 {int(time.time())}\n")
    watchdog_saw(cluster.store_dir(job_id, head), "waiting for rank 1: its folder is not on this node")
    assert len(store_processes(nodes, head, job_id)) == 2
    from tsubmit.optuna import study as optuna_study

    assert optuna_study.release_store(cluster.job(job_id, [head, second]))
    eventually(lambda: store_processes(nodes, head, job_id) == [], timeout=30, message="the store stopped")
    assert "reported by tsubmit" in (cluster.store_dir(job_id, head) / "ended").read_text()

    # The job's folder removed (a failed launch rolled back): the store stops too.
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("gone"))
    assert not run.failures(), run.failures()
    nodes.ssh(head, f"rm -rf {shlex.quote(str(head.remote_root / job_id))}")
    eventually(lambda: store_processes(nodes, head, job_id) == [], timeout=30, message="the store stopped")
    assert not listening(head.address, endpoint["port"])


def test_dashboard_over_an_ended_study_is_forwarded_over_ssh(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, endpoint = cluster.start([head, second], study=unique_study("dash"))
    assert not run.failures(), run.failures()
    run_worker(nodes, second, job_id, worker_env(endpoint, job_id, 1), 2)
    cluster.stop(job_id, [head])

    from tsubmit.optuna import dashboard as optuna_dashboard

    job = cluster.job(job_id, [head, second])
    opened = optuna_dashboard.open_dashboard(job)
    assert opened["started"] is True and listener_address(opened["port"]) == "127.0.0.1"
    assert optuna_dashboard.open_dashboard(job) == {"port": opened["port"], "started": False}
    forward, url = optuna_dashboard.forward_dashboard(job, opened["port"])
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(f":{opened['port']}/")
        with urllib.request.urlopen(url + "api/studies", timeout=30) as answer:
            assert endpoint["study"] in answer.read().decode()
    finally:
        forward.end()
    optuna_dashboard.close_dashboard(job)
    assert store_processes(nodes, head, job_id) == []
    assert not listening("127.0.0.1", opened["port"])

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
    from tsubmit.optuna.storages import validate_storage_url

    with pytest.raises(UsageError) as raised:
        validate_storage_url(url)
    message = str(raised.value)
    assert reason in message and "\n" not in message
    assert ":pw@" not in message and "p@ss" not in message


def test_named_storages_are_private_and_masked(home):
    import click
    from click.testing import CliRunner

    from tsubmit.cli import _Group
    from tsubmit.cli.optuna import db
    from tsubmit.optuna import storages

    @click.group(cls=_Group)
    def root():
        pass

    root.add_command(db)
    runner = CliRunner()
    url = "postgresql://alice:s3cr%40t-pw@db.example:5432/optuna"
    added = runner.invoke(root, ["db", "add", "prod", url])
    assert added.exit_code == 0, added.output
    assert "s3cr" not in added.output and "alice:***@db.example" in added.output
    path = storages.storages_file()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(path.read_text()) == {"prod": url}
    # the URL can come on stdin, out of the shell history
    added = runner.invoke(root, ["db", "add", "dev"], input="mysql+pymysql://bob:hunter2@db2/optuna\n")
    assert added.exit_code == 0, added.output
    listed = runner.invoke(root, ["db", "list"])
    assert listed.exit_code == 0
    assert "s3cr" not in listed.output and "hunter2" not in listed.output
    assert "prod" in listed.output and "mysql+pymysql://bob:***@db2/optuna" in listed.output
    assert storages.resolve_storage("prod") == url
    assert storages.resolve_storage(None) is None
    assert storages.resolve_storage(url) == url
    again = runner.invoke(root, ["db", "add", "prod", url])
    assert again.exit_code == 2 and "--replace" in again.output and "s3cr" not in again.output
    bad = runner.invoke(root, ["db", "add", "x", "postgresql://u:topsecret@/optuna"])
    assert bad.exit_code == 2 and "no host" in bad.output and "topsecret" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="no Optuna storage named nope"):
        storages.resolve_storage("nope")
    removed = runner.invoke(root, ["db", "remove", "prod"])
    assert removed.exit_code == 0 and "s3cr" not in removed.output
    assert runner.invoke(root, ["db", "remove", "prod"]).exit_code == 2
    assert list(yaml.safe_load(path.read_text())) == ["dev"]
    with pytest.raises(UsageError, match="minimize or maximize"):
        storages.check_direction("up")


def test_missing_optuna_on_the_head_or_a_node_names_the_packages(cluster, nodes):
    head, second = nodes.nodes[:2]
    job_id, run, _ = cluster.start([head, second], study=unique_study("bare"),
                                   optuna_store_python="/usr/bin/python3")
    message = failure_line(run, head.name)
    assert "optuna is not installed for /usr/bin/python3 on this node" in message
    assert "optuna>=4.3, grpcio and protobuf" in message
    assert store_processes(nodes, head, job_id) == []
    hosts = {node.name: {"tsubmit_rank": rank, "optuna_store_python": "/usr/bin/python3"}
             for rank, node in enumerate((head, second))}
    run = run_playbook("test_optuna_check", [str(cluster.inventory)], hosts, {
        "tsubmit_job_id": job_id,
        "tsubmit_job_optuna": {"study": "s", "direction": "minimize", "storage": None}})
    for node in (head, second):
        message = failure_line(run, node.name)
        # (the system python has protobuf, not optuna or grpcio)
        assert "missing for /usr/bin/python3 on this node: optuna>=4.3, grpcio (pip install " in message
    run = run_playbook("test_optuna_check", [str(cluster.inventory)],
                       {head.name: {"tsubmit_rank": 0}}, {
                           "tsubmit_job_id": job_id,
                           "tsubmit_job_optuna": {"study": "s", "direction": "minimize", "storage": None}})
    assert not run.failures()
