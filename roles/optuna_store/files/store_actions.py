"""The one-shot actions of a job's Optuna store, each run by an Ansible task as
`optuna_store.py ACTION JSON`: start, stop, release, summary, snapshot,
dashboard, check. Each prints at most one JSON line and returns; what keeps
running is started detached (store_supervisor.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time

from store_base import (
    StoreError,
    boot_id,
    fail,
    free_port,
    grpc_target,
    load_config,
    need_config,
    optuna_dir,
    read_url,
    ready_file,
    save_config,
    script_copy,
    study_key,
    write_private,
)
from store_optuna import (
    config_storage,
    driver_problem,
    ensure_study,
    external_storage,
    quiet_optuna,
    sqlite_url,
    summarize,
)
from store_supervisor import (
    prove_store,
    spawn_entry,
    start_dashboard,
    start_server,
    stop_store,
    terminate,
    wait_ready,
)
from tsubmit_procs import is_ours, read_pid


def _not_installed() -> str:
    from tsubmit_optuna_grpc import OPTUNA_REQUIREMENT

    return f"install {OPTUNA_REQUIREMENT}, grpcio and protobuf there"


def start(options: dict) -> None:
    job_dir = os.path.realpath(os.path.expanduser(options["job_dir"]))
    folder = optuna_dir(job_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    timeout = float(options.get("timeout") or 60)
    grace = float(options.get("grace") or 10)
    # A store left from an earlier attempt of this job: stop it first.
    if load_config(job_dir) is not None:
        stop_store(job_dir, grace, "a new attempt of the job started")
    markers = [os.path.join(folder, name) for name in ("stopping", "ended", "workers-ended")]
    for path in [*markers, ready_file(folder, "server"), ready_file(folder, "dashboard")]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    script_copy(folder)
    try:
        quiet_optuna()
    except ImportError as error:
        raise StoreError(f"{error.name or 'optuna'} is not installed for {sys.executable} on this node; "
                         f"{_not_installed()}") from None

    config = {
        "dir": folder, "job_dir": job_dir, "job_id": options["job_id"], "study": options["study"],
        "direction": options["direction"], "nodes": int(options["nodes"]),
        # the ranks' folders as the role composes them (tsubmit/layout.py), %d the rank
        "rank_attempt_dir": os.path.expanduser(options["rank_attempt_dir"]), "boot_id": boot_id(),
        "kind": "external" if options.get("url_file") else "head",
        "url_file": options.get("url_file"), "address": None, "port": None, "study_file": None,
        "dashboard": bool(options.get("dashboard")), "dashboard_port": None, "grace": grace,
        "started": time.time(),
    }
    started: dict[str, tuple[int, str]] = {}
    try:
        if config["kind"] == "head":
            _start_head_store(config, options, started, timeout)
        else:
            url = read_url(config["url_file"])
            config["study_id"] = ensure_study(external_storage(url), config["study"], config["direction"])
            save_config(config)
        if config["dashboard"]:
            _start_dashboard_checked(config, options, started, timeout)
        if config["kind"] == "head" or config["dashboard"]:
            started["watchdog"] = spawn_entry(folder, "watch")
    except BaseException:
        for record in (started.get("watchdog"), started.get("dashboard"), started.get("server")):
            terminate(record, 5)
        raise
    print(json.dumps({
        "host": config["address"], "port": config["port"], "study": config["study"],
        "direction": config["direction"], "kind": config["kind"], "study_file": config["study_file"],
        "study_id": config.get("study_id"), "dashboard_port": config["dashboard_port"],
        "dir": folder,
    }))


def _start_head_store(config: dict, options: dict, started: dict, timeout: float) -> None:
    studies_dir = os.path.realpath(os.path.expanduser(options["studies_dir"]))
    os.makedirs(studies_dir, mode=0o700, exist_ok=True)
    config["study_file"] = os.path.join(studies_dir, study_key(config["study"]) + ".db")
    config["address"] = options["address"]
    wanted = int(options.get("port") or 0)
    problem = _start_on_a_port(config, "server", wanted, started, timeout)
    if problem:
        raise StoreError(f"{problem}; choose another optuna_store_port or leave it unset" if wanted
                         else problem)
    config["study_id"] = prove_store(config, timeout)
    save_config(config)


def _start_dashboard_checked(config: dict, options: dict, started: dict, timeout: float) -> None:
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise StoreError(f"optuna-dashboard is not installed for {sys.executable} on this node; "
                         "install it there (pip install optuna-dashboard) or run without --dashboard"
                         ) from None
    wanted = int(options.get("dashboard_port") or 0)
    problem = _start_on_a_port(config, "dashboard", wanted, started, timeout)
    if problem:
        # The job runs on without a dashboard it could not have: store.json says none.
        config["dashboard_port"] = None
        save_config(config)
        raise StoreError(f"the dashboard did not start: {problem}" +
                         ("; choose another optuna_store_dashboard_port or leave it unset" if wanted else ""))


def _start_on_a_port(config: dict, name: str, wanted: int, started: dict, timeout: float) -> str | None:
    """Start NAME, the server (on config["address"], its port config["port"]) or the
    dashboard (on 127.0.0.1, config["dashboard_port"]), on port WANTED, else on a
    free port, tried up to five times: another process may take a free port between
    the pick and the bind. The port is saved in store.json before the start (the
    process reads it there); STARTED[NAME] holds its record. None once it is ready,
    else why not, and what did not come up is stopped."""
    start, address, key = ((start_server, config["address"], "port") if name == "server"
                           else (start_dashboard, "127.0.0.1", "dashboard_port"))
    problem = None
    for _ in range(1 if wanted else 5):
        config[key] = wanted or free_port(address)
        save_config(config)
        record = started[name] = start(config)  # start's rollback stops it, whatever happens
        problem = wait_ready(config, name, record, timeout)
        if problem is None:
            return None
        terminate(started.pop(name), 5)  # not ready within the timeout: it may still run
        if wanted or "already in use" not in problem:
            break
    return problem


def stop(options: dict) -> None:
    report = stop_store(options["job_dir"], float(options.get("grace") or 10), "stopped by tsubmit")
    if report is not None and (report["stopped"] or report["failed_trials"]):
        print(json.dumps(report))
    if report is not None and report.get("still_listening"):
        fail(f"still listening after the stop: {', '.join(report['still_listening'])}")


def release(options: dict) -> None:
    config = load_config(options["job_dir"])
    if config is None or os.path.exists(os.path.join(config["dir"], "ended")):
        return
    write_private(os.path.join(config["dir"], "workers-ended"), f"{time.time()}\n")
    print("released")


def summary(options: dict) -> None:
    config = need_config(options)
    storage = config_storage(config, prefer_server=False)
    study = summarize(storage, config["study"], config["direction"])
    server = is_ours(read_pid(os.path.join(config["dir"], "server.pid")))
    dashboard = is_ours(read_pid(os.path.join(config["dir"], "dashboard.pid")))
    print(json.dumps({
        "study": config["study"], "direction": config["direction"], "storage": config["kind"],
        "store": ("running" if server else "stopped") if config["kind"] == "head" else "external",
        "endpoint": grpc_target(config["address"], config["port"]) if config["kind"] == "head" else None,
        "dashboard_port": config.get("dashboard_port") if dashboard else None,
        **study,
    }, default=str))


def snapshot(options: dict) -> None:
    """A consistent copy of the study: the WAL checkpointed, then SQLite's backup API
    (for an external database: the study copied into a new SQLite file)."""
    config = need_config(options)
    handle, target = tempfile.mkstemp(prefix="snapshot-", suffix=".db", dir=config["dir"])
    os.close(handle)
    os.chmod(target, 0o600)
    try:
        if config["kind"] == "head":
            with contextlib.closing(sqlite3.connect(config["study_file"], timeout=60)) as source:
                source.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
                with contextlib.closing(sqlite3.connect(target)) as copy:
                    source.backup(copy)
                    copy.execute("PRAGMA journal_mode=DELETE").fetchall()  # one self-contained file
        else:
            optuna = quiet_optuna()
            os.unlink(target)
            url = read_url(config["url_file"])
            external_storage(url)  # one clear line if it cannot be reached
            optuna.copy_study(from_study_name=config["study"], from_storage=url,
                              to_storage=sqlite_url(target))
        with contextlib.closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as copy:
            trials = copy.execute(
                "SELECT COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = ?", (config["study"],)).fetchone()[0]
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        raise
    print(json.dumps({"path": target, "study": config["study"], "trials": trials,
                      "file": study_key(config["study"]) + ".db"}))


def dashboard(options: dict) -> None:
    """Start a dashboard over the study unless one runs; print its port. With
    "state": "stopped", stop a dashboard started this way (not the job's own)."""
    config = need_config(options)
    folder = config["dir"]
    record = read_pid(os.path.join(folder, "dashboard.pid"))
    if options.get("state") == "stopped":
        if config.get("dashboard") or not is_ours(record):
            print(json.dumps({"stopped": False}))  # the job's own dashboard stays until the job ends
            return
        terminate(record, 5)
        config["dashboard_port"] = None
        save_config(config)
        print(json.dumps({"stopped": True}))
        return
    if is_ours(record) and config.get("dashboard_port"):
        print(json.dumps({"port": config["dashboard_port"], "started": False}))
        return
    started: dict = {}
    script_copy(folder)
    _start_dashboard_checked(config, options, started, float(options.get("timeout") or 60))
    print(json.dumps({"port": config["dashboard_port"], "started": True}))


def check(options: dict) -> None:
    """The modules a worker imports, for the node's python: optuna and grpcio with the
    head-node store, optuna and the database's driver with an external one."""
    from tsubmit_optuna_grpc import OPTUNA_REQUIREMENT, optuna_too_old

    scheme = options.get("scheme") or ""
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
        driver = driver_problem(f"{scheme}://host/database")
        if driver:
            missing.append(driver)
    if missing:
        fail(f"missing for {sys.executable} on this node: {', '.join(missing)} "
             f"(pip install {' '.join(repr(p) if '[' in p or '>' in p else p for p in missing)})")
    too_old = None if scheme else optuna_too_old()
    if too_old:
        fail(f"{too_old} for {sys.executable} on this node, which tsubmit's store needs "
             f"(pip install '{OPTUNA_REQUIREMENT}')")
    print(json.dumps({"ok": True}))
