"""tsubmit_optuna_grpc.py, the one home of Optuna's private gRPC API, shipped with
the store's scripts and with the workers' helper: its pure parts, and both
sides on real Optuna and a real gRPC server on 127.0.0.1."""

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import optuna

FILES = Path(__file__).resolve().parents[2] / "roles" / "optuna_store" / "files"
sys.path[:0] = [str(FILES)]

import tsubmit_optuna_grpc  # noqa: E402 - the node-side module, from the role's files


def test_the_service_config_waits_for_the_store_and_retries_unavailable():
    config = json.loads(tsubmit_optuna_grpc.service_config(300.0))
    (method,) = config["methodConfig"]
    assert method["name"] == [{}]  # every method
    assert method["waitForReady"] is True and method["timeout"] == "300s"
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    options = dict(tsubmit_optuna_grpc.channel_options(7.5))
    assert options["grpc.max_receive_message_length"] == -1  # Optuna's own option, kept
    assert json.loads(options["grpc.service_config"])["methodConfig"][0]["timeout"] == "7s"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(port: int, storage):
    """Optuna's storage service on a server of our own, as store_study.py does when it serves a study."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    assert tsubmit_optuna_grpc.add_storage_service(server, storage)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def test_the_patient_proxy_reaches_the_served_storage():
    storage, port = optuna.storages.InMemoryStorage(), _free_port()
    server = _serve(port, storage)
    try:
        proxy = tsubmit_optuna_grpc.patient_proxy("127.0.0.1", port, 30)
        assert isinstance(proxy, tsubmit_optuna_grpc.PatientProxy)
        proxy.wait_server_ready(timeout=10)
        study = optuna.create_study(storage=proxy, study_name="s")
        study.tell(study.ask(), 1.0)
        assert [t.value for t in optuna.load_study(study_name="s", storage=storage).trials] == [1.0]
        proxy.close()
    finally:
        server.stop(grace=None)


def test_a_call_waits_for_a_store_that_comes_back():
    """What the watchdog's restart needs: a call made while nothing listens
    succeeds once the store listens again (the stock proxy fails at once)."""
    storage, port = optuna.storages.InMemoryStorage(), _free_port()
    storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    proxy = tsubmit_optuna_grpc.patient_proxy("127.0.0.1", port, 60)
    servers = []
    starter = threading.Timer(2.0, lambda: servers.append(_serve(port, storage)))
    starter.start()
    began = time.monotonic()
    try:
        assert proxy.get_study_id_from_name("s") == storage.get_study_id_from_name("s")
        assert time.monotonic() - began >= 1.5  # it did wait for the server
    finally:
        starter.join()
        for server in servers:
            server.stop(grace=None)
        proxy.close()


def test_a_pickled_proxy_stays_patient():
    proxy = tsubmit_optuna_grpc.patient_proxy("127.0.0.1", _free_port(), 42)
    copy = pickle.loads(pickle.dumps(proxy))
    assert type(copy) is tsubmit_optuna_grpc.PatientProxy and copy._tsubmit_wait == 42
    proxy.close()
    copy.close()


def test_optunas_own_functions_reach_the_store_through_sitecustomize(tmp_path):
    """sitecustomize.py's wrap of optuna.storages.get_storage, on this Optuna: a worker's
    `optuna.create_study(storage="grpc://HOST:PORT", load_if_exists=True)` and
    `optuna.load_study(...)` reach a real store on 127.0.0.1 (what torch-submit's
    contract asks of every node)."""
    storage, port = optuna.storages.InMemoryStorage(), _free_port()
    server = _serve(port, storage)
    worker = ("import optuna\n"
              f"uri = 'grpc://127.0.0.1:{port}'\n"
              "study = optuna.create_study(study_name='s', storage=uri, load_if_exists=True)\n"
              "study.tell(study.ask(), 2.0)\n"
              "print(len(optuna.load_study(study_name='s', storage=uri).trials))\n")
    try:
        for _ in range(2):  # the second worker finds the study the first made
            done = subprocess.run([sys.executable, "-c", worker], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(FILES)})
            assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-1] == "2"
        assert [t.value for t in optuna.load_study(study_name="s", storage=storage).trials] == [2.0, 2.0]
    finally:
        server.stop(grace=None)


def test_this_optuna_is_one_the_patches_know():
    """The oldest Optuna tsubmit supports (OLDEST_OPTUNA) is what scripts/compat.sh tests
    these patches on, the main venv the newest; an older one is refused on the node."""
    version = tuple(int(part) for part in optuna.__version__.split(".")[:2])
    assert version >= tsubmit_optuna_grpc.OLDEST_OPTUNA
    assert tsubmit_optuna_grpc.optuna_too_old() is None


def test_the_node_check_refuses_an_optuna_older_than_the_patches_know(tmp_path):
    """On a node whose Optuna is older than OLDEST_OPTUNA the check fails, naming the
    version and what to install, instead of the store falling back to a proxy that does
    not wait for it. A stand-in `optuna` package (its version only) plays the old Optuna:
    this venv holds the newest, and scripts/compat.sh's the oldest supported."""
    (tmp_path / "optuna").mkdir()
    (tmp_path / "optuna" / "__init__.py").write_text('__version__ = "4.2.0"\n')
    node_lib = FILES.parents[1] / "node_lib" / "files"
    check = subprocess.run([sys.executable, str(FILES / "optuna_store.py"), "check", '{"scheme": ""}'],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": f"{tmp_path}:{node_lib}"})
    assert check.returncode == 1, check.stdout + check.stderr
    assert "optuna 4.2.0 is older than 4.3" in check.stderr
    assert f"pip install '{tsubmit_optuna_grpc.OPTUNA_REQUIREMENT}'" in check.stderr
