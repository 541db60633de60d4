"""The process of a job's Optuna store, `optuna_store.py serve DIR NAME`, started
detached and kept up by optuna_store.SUPERVISE: NAME "store" serves the
study's SQLite file over gRPC (Optuna's storage proxy, SO_REUSEPORT off), the
job's dashboard when it asked for one, and ends by itself once every worker
ended; NAME "dashboard" serves optuna-dashboard alone. It writes its ready
file once it listens and stops on SIGTERM (stop.sh).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import sys
import threading
import time

from store_base import (
    DASHBOARD,
    EXIT_BUSY,
    STORE,
    WATCH_INTERVAL,
    StoreError,
    bind_problem,
    config_storage,
    external_storage,
    fail_job_trials,
    first_line,
    grpc_target,
    log,
    process_dir,
    quiet_optuna,
    rdb_storage,
    read_config,
    read_url,
    scrub,
    sqlite_url,
    url_or_none,
    write_private,
)
from tsubmit_procs import group_alive, is_ours, read_pid


def hold_study_lock(config: dict):
    """One server at a time serves a study file: a lock file beside it, naming the holder."""
    path = config["study_file"]
    lock = open(path + ".lock", "a+")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        log(f"ERROR study {config['study']} is already served from {path} by {holder}; "
            "stop that job first or choose another --study")
        sys.exit(EXIT_BUSY)
    lock.seek(0)
    lock.truncate()
    lock.write(f"job {config['job_id']} at {grpc_target(config['address'], config['port'])} "
               f"(pid {os.getpid()})\n")
    lock.flush()
    return lock


def served_storage(path: str):
    """Optuna's cached storage over the SQLite file PATH, already holding every trial
    of every study in it: a restarted server must know the trials its predecessor
    created (the cache looks a trial up, KeyError otherwise, when a worker sets a
    param of a trial that was RUNNING across the restart)."""
    storage = quiet_optuna().storages.get_storage(rdb_storage(sqlite_url(path)))
    for study in storage.get_all_studies():
        storage.get_all_trials(storage.get_study_id_from_name(study.study_name), deepcopy=False)
    return storage


def start_grpc(config: dict, storage):
    """The gRPC storage proxy on the store's address and port; what stops it."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tsubmit_optuna_grpc import add_storage_service

    address, port = config["address"], config["port"]
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    if not add_storage_service(server, storage):
        # another Optuna layout: its own server, still proven by start's nonce check
        optuna = quiet_optuna()
        threading.Thread(target=optuna.storages.run_grpc_proxy_server, args=(storage,),
                         kwargs={"host": address, "port": port}, daemon=True).start()
        return lambda: None
    try:
        server.add_insecure_port(grpc_target(address, port))
    except RuntimeError:
        log(f"ERROR port {port} on {address} is already in use by another process")
        sys.exit(EXIT_BUSY)
    server.start()
    return lambda: server.stop(grace=1).wait()


def start_dashboard(config: dict):
    """optuna-dashboard over the study (the file, or the external database) on 127.0.0.1; what stops it."""
    import errno
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    port = config["dashboard_port"]
    storage = (external_storage(read_url(config["url_file"])) if config["kind"] == "external"
               else rdb_storage(sqlite_url(config["study_file"])))

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    try:
        httpd = make_server("127.0.0.1", port, optuna_dashboard.wsgi(storage), server_class=Server,
                            handler_class=Quiet)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            log(f"ERROR dashboard port 127.0.0.1:{port} is already in use by another process")
        else:
            log(f"ERROR cannot listen on 127.0.0.1:{port}: {error.strerror or error}")
        sys.exit(EXIT_BUSY)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log(f"dashboard for study {config['study']} on http://127.0.0.1:{port}/")
    return httpd.shutdown


def workers_state(config: dict) -> tuple[str | None, str | None]:
    """(why every worker of the job counts as ended, None), or (None, the rank the
    store waits for, said as it logs it).

    A rank has ended when its attempt folder (config["rank_attempt_dir"] % rank,
    as the launch contract lays it out) holds an exit code or the stop marker,
    or its process is gone. Ranks whose folders this node cannot see (no shared
    filesystem) count as running until the controller says otherwise
    (`release`), or the job is stopped."""
    if os.path.exists(os.path.join(config["dir"], "workers-ended")):
        return "every worker ended (reported by tsubmit)", None
    if not os.path.isdir(config["job_dir"]):
        return "the job's folder was removed", None
    for rank in range(config["nodes"]):
        attempt = config["rank_attempt_dir"] % rank
        if not os.path.isdir(attempt):
            return None, f"rank {rank}: its folder is not on this node (tsubmit reports when it ends)"
        if any(os.path.exists(os.path.join(attempt, name)) for name in ("exit_code", "stopped")):
            continue
        record = read_pid(os.path.join(attempt, "pid"))
        if record is None:
            return None, f"rank {rank}: starting"
        if is_ours(record) or group_alive(record[0]):
            return None, f"rank {rank}: running (pid {record[0]})"
    return "every worker ended", None


def serve(folder: str, name: str) -> None:
    config = read_config(folder)
    stoppers, storage = [], None
    reason = name == STORE and workers_state(config)[0]
    if reason:  # the workers ended while it was down (a restart that kept failing)
        finish(config, None, reason, [])
        return
    if name == STORE and config["kind"] == "head":
        lock = hold_study_lock(config)  # noqa: F841 - the lock lasts as long as the server
        problem = bind_problem(config["address"], config["port"])
        if problem:
            log(f"ERROR {problem}")
            sys.exit(EXIT_BUSY)
        with contextlib.closing(sqlite3.connect(config["study_file"], timeout=60)) as database:
            database.execute("PRAGMA journal_mode=WAL")  # readers (status, fetch, dashboard) never block it
        storage = served_storage(config["study_file"])
        stoppers.append(start_grpc(config, storage))
        log(f"serving study {config['study']} from {config['study_file']} on "
            f"{grpc_target(config['address'], config['port'])}")
    if name == DASHBOARD or config["dashboard"]:
        try:
            stoppers.insert(0, start_dashboard(config))
        except StoreError as error:
            log(f"ERROR {error}")
            sys.exit(1)
    ended = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ended.set())
    write_private(os.path.join(process_dir(config, name), "ready"), f"{os.getpid()}\n")
    waiting = None
    while not ended.wait(WATCH_INTERVAL):
        if name != STORE:
            continue
        reason, still = workers_state(config)
        if reason:
            finish(config, storage, reason, stoppers)
            return
        if still != waiting:  # what keeps the store up, each time it changes
            waiting = still
            log(f"waiting for {waiting}")
    for stopper in stoppers:
        stopper()
    log("stopped")
    sys.exit(128 + signal.SIGTERM)  # not an end of its own: the supervisor starts it again


def finish(config: dict, storage, reason: str, stoppers: list) -> None:
    """Every worker ended: RUNNING trials FAIL (with an external database, this job's
    only), the dashboard and the server stopped; why, in `ended`."""
    report = {"reason": reason, "failed_trials": 0,
              "stopped": ([DASHBOARD] if config["dashboard"] and stoppers else [])
              + (["server"] if storage else [])}
    try:
        report["failed_trials"] = fail_job_trials(config, storage or config_storage(config))
    except Exception as error:
        report["error"] = scrub(f"cannot mark running trials failed: {first_line(error)}",
                                url_or_none(config))
    for stopper in stoppers:
        stopper()
    if os.path.isdir(config["dir"]):
        write_private(os.path.join(config["dir"], "ended"),
                      json.dumps({**report, "time": time.time()}) + "\n")
    log(f"stopped: {json.dumps(report)}")
