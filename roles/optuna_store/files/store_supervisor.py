"""The processes of a job's Optuna store: started detached, proven, watched,
stopped.

The gRPC server and the dashboard (store_servers.py) each run in their own
session and process group with pid, log and ready files in the store's folder;
the watchdog here restarts them when they die and stops the store once every
worker ended. Pid files hold "PID STARTTICKS EPOCH" and a process is only
signalled while its start time still matches (tsubmit_procs.py), so a reused
pid is never hit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from store_base import (
    StoreError,
    boot_id,
    first_line,
    last_error,
    listening,
    load_config,
    log,
    read_config,
    ready_file,
    url_or_none,
    write_private,
)
from store_optuna import config_storage, ensure_study, fail_running_trials, grpc_proxy
from store_urls import scrub
from tsubmit_procs import group_alive, is_ours, pid_record, read_pid, start_ticks

NONCE_ATTR = "tsubmit:store"
WATCH_INTERVAL = 1.0
RESTART_BACKOFF_MAX = 30.0


def spawn(argv: list[str], log_path: str, pid_path: str, cwd: str,
          env: dict | None = None) -> tuple[int, str]:
    """Start ARGV detached in its own session and process group; record "PID TICKS EPOCH"."""
    with open(log_path, "ab") as output:
        os.chmod(log_path, 0o600)
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=cwd,
            start_new_session=True, close_fds=True, env=env,
        )
    record = pid_record(process.pid)
    write_private(pid_path, record)
    return process.pid, record.split()[1]


def spawn_entry(folder: str, daemon: str) -> tuple[int, str]:
    """Start one of optuna_store.py's daemons (server, dashboard, watchdog) for the store in FOLDER."""
    name = {"serve": "server", "serve-dashboard": "dashboard", "watch": "watchdog"}[daemon]
    if name != "watchdog":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ready_file(folder, name))
    return spawn([sys.executable, os.path.join(folder, "optuna_store.py"), daemon, folder],
                 os.path.join(folder, f"{name}.log"), os.path.join(folder, f"{name}.pid"), folder)


def start_server(config: dict) -> tuple[int, str]:
    return spawn_entry(config["dir"], "serve")


def start_dashboard(config: dict) -> tuple[int, str]:
    return spawn_entry(config["dir"], "serve-dashboard")


def terminate(record: tuple[int, str] | None, grace: float) -> bool:
    """SIGTERM the recorded process group, SIGKILL after GRACE; True if something was running."""
    if record is None:
        return False
    pid, ticks = record
    leader = start_ticks(pid)
    if leader is not None and leader != ticks:
        return False  # the pid was reused by another process
    if leader is None and not group_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return True


def wait_ready(config: dict, name: str, record: tuple[int, str], timeout: float) -> str | None:
    """Wait for NAME's ready file; None when ready, else why it is not."""
    folder = config["dir"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(ready_file(folder, name)) and is_ours(record):
            return None
        if not is_ours(record):
            time.sleep(0.1)  # the ready file may land just before the exit
            if os.path.exists(ready_file(folder, name)) and is_ours(record):
                return None
            return last_error(os.path.join(folder, f"{name}.log"))
        time.sleep(0.05)
    return f"the {name} did not start within {timeout:g}s (see {folder}/{name}.log)"


def prove_store(config: dict, timeout: float) -> int:
    """A real call through the gRPC proxy returns this job's study in this job's file.

    gRPC servers may share a port (SO_REUSEPORT), so a listening port proves
    nothing: the study is created (or loaded) through the proxy, a fresh nonce
    is set on it through the proxy, and the nonce must then be read back from
    the SQLite file this store serves."""
    proxy = grpc_proxy(config["address"], config["port"], timeout)
    study_id = ensure_study(proxy, config["study"], config["direction"])
    nonce = os.urandom(16).hex()
    proxy.set_study_system_attr(study_id, NONCE_ATTR, {"job": config["job_id"], "nonce": nonce})
    with contextlib.closing(sqlite3.connect(f"file:{config['study_file']}?mode=ro", uri=True,
                                            timeout=30)) as database:
        row = database.execute(
            "SELECT a.value_json FROM studies s JOIN study_system_attributes a ON a.study_id = s.study_id "
            "WHERE s.study_name = ? AND a.key = ?", (config["study"], NONCE_ATTR)).fetchone()
    if not row or json.loads(row[0]).get("nonce") != nonce:
        raise StoreError(f"{config['address']}:{config['port']} answers, but not from this job's study "
                         f"file {config['study_file']} (another Optuna store on that port?); refusing "
                         "to split the study")
    proxy.close()
    return study_id


def shutdown(config: dict, reason: str, grace: float) -> dict:
    """Mark RUNNING trials FAIL, then stop the dashboard, then the store. Idempotent."""
    folder = config["dir"]
    report = {"reason": reason, "failed_trials": 0, "stopped": []}
    lock = None
    if os.path.isdir(folder):
        lock = open(os.path.join(folder, "control.lock"), "a")  # noqa: SIM115 - held until the end
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if config.get("boot_id") and config["boot_id"] != boot_id():
            return report  # another machine's store (a shared filesystem): not ours to signal
        try:
            storage = config_storage(config)
            report["failed_trials"] = fail_running_trials(
                storage, config["study"], config["job_id"] if config["kind"] == "external" else None)
        except Exception as error:
            report["error"] = scrub(f"cannot mark running trials failed: {first_line(error)}",
                                    url_or_none(config))
        for name in ("dashboard", "server"):
            record = config.get("_records", {}).get(name) or read_pid(os.path.join(folder, f"{name}.pid"))
            if terminate(record, grace):
                report["stopped"].append(name)
        if os.path.isdir(folder):
            write_private(os.path.join(folder, "ended"),
                          json.dumps({"reason": reason, "time": time.time(), **report}) + "\n")
    finally:
        if lock is not None:
            lock.close()
    return report


def stop_store(job_dir: str, grace: float, reason: str) -> dict | None:
    """Stop whatever of the job's store runs on this node: watchdog first, so nothing restarts."""
    config = load_config(job_dir)
    if config is None:
        return None
    folder = config["dir"]
    if config.get("boot_id") and config["boot_id"] != boot_id():
        return None
    write_private(os.path.join(folder, "stopping"), f"{time.time()}\n")
    watchdog = terminate(read_pid(os.path.join(folder, "watchdog.pid")), grace)
    report = shutdown(config, reason, grace)
    if watchdog:
        report["stopped"].insert(0, "watchdog")
    left = [f"{config['address']}:{config['port']}"] if config.get("port") and listening(
        config["address"], config["port"]) else []
    if config.get("dashboard_port") and listening("127.0.0.1", config["dashboard_port"]):
        left.append(f"127.0.0.1:{config['dashboard_port']}")
    if left and not any(is_ours(read_pid(os.path.join(folder, f"{n}.pid")))
                        for n in ("server", "dashboard")):
        left = []  # someone else's listener on a port we used: not ours
    report["still_listening"] = left
    return report


def workers_state(config: dict) -> tuple[str | None, str | None]:
    """(why every worker of the job counts as ended, None), or (None, the rank the
    store waits for, said as the watchdog logs it).

    A rank has ended when its attempt folder (config["rank_attempt_dir"] % rank,
    the folder the optuna_store role names as tsubmit/layout.py does) holds an
    exit code or the stop marker, or its process is gone. Ranks whose folders
    this node cannot see (no shared filesystem) count as running until the
    controller says otherwise (`release`), or the job is stopped."""
    folder = config["dir"]
    if os.path.exists(os.path.join(folder, "workers-ended")):
        return "every worker ended (reported by tsubmit)", None
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


def workers_ended(config: dict) -> str | None:
    """Why every worker of the job counts as ended, or None while one may still run."""
    return workers_state(config)[0]


def watch(folder: str) -> None:
    """The watchdog: restart the server (same port, same file) or the dashboard when it
    dies; stop the store once every worker ended or the job's folder is removed."""
    config = read_config(folder)
    records = config["_records"] = {}
    stopping = {"now": False}

    def on_term(*_):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log(f"watching the store of job {config['job_id']} (study {config['study']})")
    failures = {"server": 0, "dashboard": 0}
    next_try = {"server": 0.0, "dashboard": 0.0}
    waiting = None
    while not stopping["now"]:
        if os.path.exists(os.path.join(folder, "stopping")):
            break
        if not os.path.isdir(config["job_dir"]):
            report = shutdown(config, "the job's folder was removed", config["grace"])
            log(f"stopped: {report}")
            return
        reason, still = workers_state(config)
        if reason:
            report = shutdown(config, reason, config["grace"])
            log(f"stopped: {json.dumps(report)}")
            return
        if still != waiting:  # what keeps the store up, each time it changes
            waiting = still
            log(f"waiting for {waiting}")
        wanted = ["server"] if config["kind"] == "head" else []
        if config.get("dashboard_port"):
            wanted.append("dashboard")
        for name in wanted:
            record = read_pid(os.path.join(folder, f"{name}.pid"))
            records[name] = record
            if is_ours(record) or time.monotonic() < next_try[name]:
                continue
            if os.path.exists(os.path.join(folder, "stopping")):
                break
            log(f"the {name} is not running; starting it again on the same port")
            record = records[name] = (start_server if name == "server" else start_dashboard)(config)
            problem = wait_ready(config, name, record, 60)
            if problem is None and name == "server":
                try:
                    prove_store(config, 30)
                except Exception as error:
                    problem = first_line(error)
                    terminate(record, 5)
            if problem is None:
                log(f"the {name} runs again (pid {record[0]})")
                failures[name] = 0
            else:
                failures[name] += 1
                delay = min(RESTART_BACKOFF_MAX, 2.0 ** failures[name])
                log(f"the {name} did not come back: {problem}; next try in {delay:g}s")
                next_try[name] = time.monotonic() + delay
        time.sleep(WATCH_INTERVAL)
    log("watchdog stopped")
