"""The study of a job's Optuna store: reached through Optuna's public API (its
private gRPC API is tsubmit_optuna_grpc.py's alone), served over gRPC and by the
dashboard, copied; what a worker's python needs for it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sqlite3
import sys
import threading
import time

from store_urls import mask_url, scrub

NONCE_ATTR, JOB_ATTR = "tsubmit:store", "tsubmit:job"
# pip packages of the database drivers SQLAlchemy imports, by module name.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
    "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python", "mysql.connector": "mysql-connector-python",
}


class StoreError(Exception):
    """A problem for the user: one line; the script exits 1."""


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def read_url(url_file: str) -> str:
    with contextlib.suppress(OSError), open(url_file) as handle:
        url = handle.read().strip()
        if url:
            return url
    raise StoreError(f"the external storage URL file {url_file} is missing or empty")


def url_or_none(config: dict) -> str | None:
    """The external storage URL of CONFIG, to scrub from messages; None for the head store."""
    with contextlib.suppress(StoreError, KeyError):
        return read_url(config["url_file"]) if config.get("kind") == "external" else None
    return None


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def grpc_target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def listen_error(error: OSError, address: str, where: str) -> StoreError:
    if error.errno == errno.EADDRINUSE:
        return StoreError(f"{where} is already in use by another process")
    if error.errno == errno.EADDRNOTAVAIL:
        return StoreError(f"{address} is not an address of this node; set tsubmit_rdzv_address "
                          "(or optuna_store_address) to one of its addresses")
    return StoreError(f"cannot listen on {where}: {error.strerror or error}")


def probe_port(address: str, port: int, *, check: bool = False) -> int:
    """A free port on ADDRESS (port 0), or, with CHECK, PORT once a plain bind
    (without SO_REUSEPORT, which gRPC would use to share it) shows it is free."""
    try:
        with socket.socket(socket.getaddrinfo(address, None)[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(check))
            probe.bind((address, port))
            probe.listen(1)
            return probe.getsockname()[1]
    except OSError as error:
        raise listen_error(error, address, f"port {port} on {address}") from None


def quiet_optuna():
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    return optuna


def rdb_storage(url: str):
    """An RDBStorage, with a connect timeout for network databases."""
    timeout = {"timeout": 60} if url.startswith("sqlite") else {"connect_timeout": 10}
    return quiet_optuna().storages.RDBStorage(url, engine_kwargs={"connect_args": timeout})


def driver_problem(url: str) -> str | None:
    """The pip package of URL's database driver when it does not import here, else None."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except ImportError as error:
        module = error.name or str(error)
        return DRIVER_PACKAGES.get(module, DRIVER_PACKAGES.get(module.split(".")[0], module))
    except Exception:
        return None  # a URL problem: the connection attempt names it
    return None


def config_storage(config: dict):
    """The study's storage with nothing of the store running: the file or the external
    database (one clear line when it cannot be used)."""
    if config["kind"] == "head":
        if not os.path.exists(config["study_file"]):
            raise StoreError(f"the study file {config['study_file']} is gone")
        return rdb_storage(f"sqlite:///{config['study_file']}")
    url = read_url(config["url_file"])
    driver = driver_problem(url)
    if driver:
        raise StoreError(f"the database driver for {mask_url(url).split('://')[0]}:// is missing for "
                         f"{sys.executable} on this node; install it there (pip install {driver})")
    try:
        return rdb_storage(url)
    except Exception as error:
        raise StoreError(scrub(f"cannot reach the external Optuna storage {mask_url(url)}: "
                               f"{first_line(error)}", url)) from None


def ensure_study(storage, study: str, direction: str) -> int:
    """Create the study (or load it) and check it goes the asked direction; its id."""
    created = quiet_optuna().create_study(storage=storage, study_name=study, direction=direction,
                                          load_if_exists=True)
    found = [str(getattr(d, "name", d)).lower() for d in created.directions]
    if found != [direction]:
        raise StoreError(f"study {study} already exists with direction {', '.join(found)}; run it with "
                         f"--direction {found[0]} or choose another --study")
    return storage.get_study_id_from_name(study)


def fail_running_trials(config: dict, storage) -> int:
    """Mark the study's RUNNING trials FAIL: all of them in the store's own file,
    only this job's in an external database (other jobs share it); how many."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(config["study"])
    except KeyError:
        return 0
    failed = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if config["kind"] == "external" and trial.system_attrs.get(JOB_ATTR) != config["job_id"]:
            continue
        with contextlib.suppress(UpdateFinishedTrialError, RuntimeError, KeyError):
            storage.set_trial_state_values(
                storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), TrialState.FAIL)
            failed += 1
    return failed


def summarize(storage, study: str, direction: str) -> dict:
    """Trials of STUDY by state, their total, and the best complete one (or None)."""
    from optuna.trial import TrialState

    trials = storage.get_all_trials(storage.get_study_id_from_name(study), deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    best = None
    if complete:
        trial = (min if direction == "minimize" else max)(complete, key=lambda t: t.values[0])
        best = {"number": trial.number, "value": trial.values[0], "params": trial.params}
    return {"trials": counts, "total": len(trials), "best": best}


def prove_served(config: dict, timeout: float) -> int:
    """A real call through the gRPC proxy returns this job's study in this job's file.

    gRPC servers may share a port (SO_REUSEPORT), so a listening port proves
    nothing: a fresh nonce set on the study through the proxy must be read back
    from the SQLite file this store serves."""
    proxy = quiet_optuna().storages.GrpcStorageProxy(host=config["address"], port=config["port"])
    proxy.wait_server_ready(timeout=timeout)
    study_id = ensure_study(proxy, config["study"], config["direction"])
    nonce = os.urandom(16).hex()
    proxy.set_study_system_attr(study_id, NONCE_ATTR, {"job": config["job_id"], "nonce": nonce})
    with contextlib.closing(sqlite3.connect(f"file:{config['study_file']}?mode=ro", uri=True,
                                            timeout=30)) as database:
        row = database.execute(
            "SELECT a.value_json FROM studies s JOIN study_system_attributes a ON a.study_id = s.study_id "
            "WHERE s.study_name = ? AND a.key = ?", (config["study"], NONCE_ATTR)).fetchone()
    proxy.close()
    if not row or json.loads(row[0]).get("nonce") != nonce:
        raise StoreError(f"{config['address']}:{config['port']} answers, but not from this job's study "
                         f"file {config['study_file']} (another Optuna store on that port?); refusing "
                         "to split the study")
    return study_id


def copy_study(config: dict, target: str) -> int:
    """A consistent copy of the study into the SQLite file TARGET: the WAL
    checkpointed, then SQLite's backup API (an external database's study copied
    by Optuna); how many trials it holds."""
    if config["kind"] == "head":
        with contextlib.closing(sqlite3.connect(config["study_file"], timeout=60)) as source:
            source.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
            with contextlib.closing(sqlite3.connect(target)) as copy:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE").fetchall()  # one self-contained file
    else:
        os.unlink(target)
        config_storage(config)  # one clear line if it cannot be reached
        quiet_optuna().copy_study(from_study_name=config["study"], from_storage=read_url(config["url_file"]),
                                  to_storage=f"sqlite:///{target}")
    with contextlib.closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as copy:
        return copy.execute("SELECT COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                            "WHERE s.study_name = ?", (config["study"],)).fetchone()[0]


def worker_problem(scheme: str) -> str | None:
    """What the node's python lacks for a worker (None if nothing): optuna, grpcio
    and protobuf with the head-node store, optuna and the driver of SCHEME's database."""
    from tsubmit_optuna_grpc import OPTUNA_REQUIREMENT, optuna_too_old

    wanted = [("optuna", OPTUNA_REQUIREMENT)]
    if not scheme:
        wanted += [("grpc", "grpcio"), ("google.protobuf", "protobuf")]
    missing = []
    for module, package in wanted:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if scheme and not missing:
        missing += filter(None, [driver_problem(f"{scheme}://host/database")])
    if missing:
        quoted = " ".join(repr(p) if "[" in p or ">" in p else p for p in missing)
        return f"missing for {sys.executable} on this node: {', '.join(missing)} (pip install {quoted})"
    too_old = None if scheme else optuna_too_old()
    return too_old and (f"{too_old} for {sys.executable} on this node, which tsubmit's store needs "
                        f"(pip install '{OPTUNA_REQUIREMENT}')")


def hold_study_lock(config: dict):
    """One server at a time serves a study file: a lock file beside it, naming the holder."""
    path = config["study_file"]
    lock = open(path + ".lock", "a+")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        raise StoreError(f"study {config['study']} is already served from {path} by "
                         f"{lock.read().strip() or 'another process'}; stop that job first or choose "
                         "another --study") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"job {config['job_id']} at {grpc_target(config['address'], config['port'])} "
               f"(pid {os.getpid()})\n")
    lock.flush()
    return lock


def start_grpc(config: dict):
    """Serve the study file over gRPC; (Optuna's storage, what stops the server).

    The storage is Optuna's cached one, already holding every trial of every
    study in the file: a restarted server must know the trials its predecessor
    created (the cache raises KeyError when a worker sets a param of a trial
    that was RUNNING across the restart)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tsubmit_optuna_grpc import add_storage_service

    address, port = config["address"], config["port"]
    probe_port(address, port, check=True)
    with contextlib.closing(sqlite3.connect(config["study_file"], timeout=60)) as database:
        database.execute("PRAGMA journal_mode=WAL")  # readers (status, fetch, dashboard) never block it
    optuna = quiet_optuna()
    storage = optuna.storages.get_storage(rdb_storage(f"sqlite:///{config['study_file']}"))
    for study in storage.get_all_studies():
        storage.get_all_trials(storage.get_study_id_from_name(study.study_name), deepcopy=False)
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    if add_storage_service(server, storage):
        try:
            server.add_insecure_port(grpc_target(address, port))
        except RuntimeError:
            raise StoreError(f"port {port} on {address} is already in use by another process") from None
        server.start()
    else:  # another Optuna layout: its own server, still proven by start's nonce check
        server = None
        threading.Thread(target=optuna.storages.run_grpc_proxy_server, args=(storage,),
                         kwargs={"host": address, "port": port}, daemon=True).start()
    log(f"serving study {config['study']} from {config['study_file']} on {grpc_target(address, port)}")
    return storage, lambda: server and server.stop(grace=1).wait()


def start_dashboard(config: dict):
    """optuna-dashboard over the study (the file, or the external database) on 127.0.0.1; what stops it."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    port = config["dashboard_port"]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    try:
        httpd = make_server("127.0.0.1", port, optuna_dashboard.wsgi(config_storage(config)),
                            server_class=Server, handler_class=Quiet)
    except OSError as error:
        raise listen_error(error, "127.0.0.1", f"dashboard port 127.0.0.1:{port}") from None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log(f"dashboard for study {config['study']} on http://127.0.0.1:{port}/")
    return httpd.shutdown
