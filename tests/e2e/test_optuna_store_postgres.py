"""The optuna_store role with an external PostgreSQL storage, on real sshd nodes.

A real PostgreSQL server (run as the postgres user on a loopback port) holds the
study; the workers reach it directly and the head runs only the dashboard and its
watchdog. What these tests guard is the password: never on a command line, in
runner artifacts or in the store's logs, and never in a failure's one line.
scripts/setup.sh --test installs PostgreSQL: without it these tests fail in CI
(tests.harness.ci.missing) rather than skip silently. The role is driven as in
test_optuna_store.py, through tests/harness/optuna_role.py.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.harness import optuna_role
from tests.harness.ci import missing  # scripts/setup.sh --test installs PostgreSQL: CI fails without
from tests.harness.optuna_role import (
    failure_line,
    python_on,
    run_worker,
    store_processes,
    unique_study,
    worker_env,
)

pytestmark = pytest.mark.e2e

# the shared fixtures, by name, so that pytest finds them in this module
home = optuna_role.home
cluster = optuna_role.cluster


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
        # only the dashboard runs on the head (and the shell that keeps it up); no gRPC store
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

        from tsubmit.optuna import study as optuna_study

        job = cluster.job(job_id, members)
        summary = optuna_study.study_summary(job)
        assert summary["storage"] == "external" and summary["total"] == 8, summary
        assert summary["trials"] == {"COMPLETE": 6, "RUNNING": 2}
        fetched = optuna_study.fetch_study(job, tmp_path / "copy.db")
        assert fetched["trials"] == 8
        run = cluster.stop(job_id, [head])
        report = json.loads(run.hosts[head.name].results["Stop the job's Optuna store"]["stdout"])
        assert report["failed_trials"] == 1 and report["stopped"] == ["store"]
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
    assert not (head.remote_root / job_id / "optuna" / "store").exists()
    wrong = url.replace(password, password[::-1])
    job_id, run, _ = cluster.start([head, second], study=unique_study("pg"), storage=wrong)
    message = failure_line(run, head.name)
    assert "password authentication failed" in message, message
    assert password[::-1] not in message and password not in message
    assert store_processes(nodes, head, job_id) == []
    assert files_holding(home / "state", password) == []
    assert files_holding(home / "state", password[::-1]) == []
