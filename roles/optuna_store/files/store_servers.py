"""The two long-running servers of a job's Optuna store, each started detached by
store_supervisor.py as `optuna_store.py serve DIR` / `serve-dashboard DIR`: the
gRPC storage proxy over the study's SQLite file, and optuna-dashboard bound to
127.0.0.1. Each writes its ready file once it listens, logs to its own log
file, and stops on SIGTERM.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
import sys

from store_base import (
    EXIT_BUSY,
    StoreError,
    bind_problem,
    grpc_target,
    log,
    mark_ready,
    read_config,
    read_url,
)
from store_optuna import (
    external_storage,
    quiet_optuna,
    rdb_storage,
    served_storage,
    sqlite_url,
)


def _hold_study_lock(config: dict):
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


def serve(folder: str) -> None:
    """The gRPC storage proxy over the study file: what run_grpc_proxy_server does, with
    SO_REUSEPORT off, so no other server can share the port with it, nor it with another."""
    config = read_config(folder)
    address, port, path = config["address"], config["port"], config["study_file"]
    lock = _hold_study_lock(config)  # noqa: F841 - the lock lasts as long as the server
    problem = bind_problem(address, port)
    if problem:
        log(f"ERROR {problem}")
        sys.exit(EXIT_BUSY)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as database:
        database.execute("PRAGMA journal_mode=WAL")  # readers (status, fetch, dashboard) never block it
    optuna = quiet_optuna()
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from tsubmit_optuna_grpc import add_storage_service  # imports optuna: only here, to serve

    storage = served_storage(path)
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    if not add_storage_service(server, storage):
        # another Optuna layout: its own server, still proven by start's nonce check
        log(f"serving {path} on {grpc_target(address, port)} with run_grpc_proxy_server")
        mark_ready(folder, "server", port)
        optuna.storages.run_grpc_proxy_server(storage, host=address, port=port)
        return
    try:
        server.add_insecure_port(grpc_target(address, port))
    except RuntimeError:
        log(f"ERROR port {port} on {address} is already in use by another process")
        sys.exit(EXIT_BUSY)
    server.start()

    def stop(*_):
        server.stop(grace=2)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    mark_ready(folder, "server", port)
    log(f"serving study {config['study']} from {path} on {grpc_target(address, port)}")
    server.wait_for_termination()
    log("stopped")


def serve_dashboard(folder: str) -> None:
    """optuna-dashboard over the study (the file, or the external database), on 127.0.0.1."""
    config = read_config(folder)
    port = config["dashboard_port"]
    url = read_url(config["url_file"]) if config["kind"] == "external" else None
    try:
        quiet_optuna()
        import optuna_dashboard

        storage = external_storage(url) if url else rdb_storage(sqlite_url(config["study_file"]))
        app = optuna_dashboard.wsgi(storage)
    except StoreError as error:
        log(f"ERROR {error}")
        sys.exit(1)
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    try:
        httpd = make_server("127.0.0.1", port, app, server_class=Server, handler_class=Quiet)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            log(f"ERROR dashboard port 127.0.0.1:{port} is already in use by another process")
        else:
            log(f"ERROR cannot listen on 127.0.0.1:{port}: {error.strerror or error}")
        sys.exit(EXIT_BUSY)

    def stop(*_):
        import threading

        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    mark_ready(folder, "dashboard", port)
    log(f"dashboard for study {config['study']} on http://127.0.0.1:{port}/")
    httpd.serve_forever()
    log("stopped")
