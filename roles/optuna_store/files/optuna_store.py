"""The Optuna study store of a tsubmit job, on its head node.

Usage (every argument but the action is one JSON object, which holds no secret:
an external storage URL is only ever read from the 0600 file named by
"url_file"; the tsubmit.cluster.optuna_store action composes the paths):

  optuna_store.py start JSON       start the store (and the dashboard) for a job; print the endpoint
  optuna_store.py stop JSON        stop the store and the dashboard, mark RUNNING trials FAIL
  optuna_store.py release JSON     the controller saw every worker end: the store stops by itself
  optuna_store.py summary JSON     trials by state, best value and params (one JSON line)
  optuna_store.py snapshot JSON    a consistent copy of the study database (for `tsubmit optuna fetch`)
  optuna_store.py dashboard JSON   make sure a dashboard serves the study on 127.0.0.1; print its port
  optuna_store.py check JSON       the modules a worker needs import on this node

The store is managed as a rank is (launch.sh, stop.sh, tsubmit_procs.py): one
process, `optuna_store.py serve DIR NAME`, under a shell that restarts it
when it dies, started detached in its own session and process group with a
marker in its environment (TSUBMIT_RANK_MARKER=JOB.rNAME.aATTEMPT), its
files in <job dir>/optuna/NAME/attempt-K/ (pid "PID STARTTICKS EPOCH",
output.log, ready, exit_code), stopped by the stop role's stop.sh. NAME is
"store" (the gRPC proxy over the study's SQLite file, the job's dashboard
when asked, and the watch on the workers: it ends once every worker ended)
or "dashboard" (one `tsubmit optuna dashboard` started over the study).

Files of a job's store, in <job dir>/optuna/ (mode 0700): store.json (what
start decided), the scripts (kept so the detached process outlives the
Ansible task), workers-ended (left by release), ended (why and when the
store stopped). The study's SQLite file is the launch contract's
(launch_contract.study_file), so a later job with the same study continues
it; a lock file beside it lets one server at a time serve it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

from store_base import (
    DASHBOARD,
    NONCE_ATTR,
    STORE,
    StoreError,
    boot_id,
    config_storage,
    driver_problem,
    ensure_study,
    external_storage,
    fail,
    fail_job_trials,
    first_line,
    free_port,
    grpc_target,
    last_error,
    load_config,
    log,
    need_config,
    process_dir,
    quiet_optuna,
    read_url,
    save_config,
    sqlite_url,
    summarize,
    url_or_none,
    write_private,
)
from store_urls import scrub
from tsubmit_procs import is_ours, pid_record, read_pid

# What keeps the store's process up, as launch.sh keeps a rank's command: it is
# started again (after 1, 2, 4 ... 30 s) whenever it dies, unless it ended by
# itself (0) or never came up (the starter reports why). $1 python, $2 this
# script, $3 the store's folder, $4 NAME, $5 the attempt's folder.
SUPERVISE = r"""
here=$5
exec >>"$here/output.log" 2>&1
delay=1
while :; do
    rm -f "$here/ready"
    "$1" "$2" serve "$3" "$4"
    code=$?
    [ "$code" -eq 0 ] && break
    if [ -e "$here/ready" ]; then delay=1; elif [ ! -e "$here/restarted" ]; then break; fi
    date +%s > "$here/restarted"
    echo "$(date '+%F %T') the $4 exited with $code; starting it again on the same port in ${delay}s"
    sleep "$delay"
    delay=$((delay * 2)); [ "$delay" -le 30 ] || delay=30
done
echo "$code $(date +%s)" > "$here/exit_code"
"""



def running(config: dict, name: str) -> bool:
    return is_ours(read_pid(os.path.join(process_dir(config, name), "pid")))


def spawn(config: dict, name: str) -> None:
    """Start NAME detached, under SUPERVISE, with the marker stop.sh finds it by."""
    here = process_dir(config, name)
    shutil.rmtree(here, ignore_errors=True)
    os.makedirs(here, mode=0o700)
    marker = f"{config['job_id']}.r{name}.a{config['attempt']}"
    process = subprocess.Popen(
        ["/bin/sh", "-c", SUPERVISE, "tsubmit-optuna-store", sys.executable,
         os.path.join(config["dir"], "optuna_store.py"), config["dir"], name, here],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=config["dir"], start_new_session=True, env={**os.environ, "TSUBMIT_RANK_MARKER": marker})
    write_private(os.path.join(here, "pid"), pid_record(process.pid))


def wait_ready(config: dict, name: str, timeout: float) -> str | None:
    """None once NAME listens, else why not (it is then stopped)."""
    here = process_dir(config, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(here, "ready")):
            return None
        if os.path.exists(os.path.join(here, "exit_code")):
            return last_error(os.path.join(here, "output.log"))
        time.sleep(0.05)
    stop_process(config, name, 5)
    return f"the {name} did not start within {timeout:g}s (see {here}/output.log)"


def stop_process(config: dict, name: str, grace: float) -> bool:
    """Stop NAME as a rank is stopped (stop.sh, shipped beside this script); True if it ran."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stop.sh")
    stopped = subprocess.run(["/bin/sh", script, os.path.join(config["dir"], name), config["job_id"], name,
                              str(int(grace))], capture_output=True, text=True)
    if stopped.returncode != 0:
        raise StoreError(f"the {name} did not stop: {first_line(Exception(stopped.stderr))}")
    return bool(stopped.stdout.strip())


def script_copy(folder: str) -> None:
    """The scripts, kept in the store's folder: the detached process outlives the
    copy the Ansible task brought."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here != os.path.abspath(folder):
        for source in glob.glob(os.path.join(here, "*.py")):
            target = os.path.join(folder, os.path.basename(source))
            shutil.copyfile(source, target + ".tmp")
            os.chmod(target + ".tmp", 0o600)
            os.replace(target + ".tmp", target)


def not_installed() -> str:
    from tsubmit_optuna_grpc import OPTUNA_REQUIREMENT

    return f"install {OPTUNA_REQUIREMENT}, grpcio and protobuf there"


# --------------------------------------------------------------------------- the actions


def start(options: dict) -> None:
    folder = options["dir"]
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    if options.get("url_file"):  # shipped beside this script (0600): kept in the store's folder
        options["url_file"] = os.path.join(folder, "storage-url")
        write_private(options["url_file"], read_url(os.path.join(os.path.dirname(__file__), "storage-url")))
    timeout = float(options.get("timeout") or 60)
    earlier = load_config(options)
    if earlier is not None:  # a store left from an earlier attempt of this job: stop it first
        shut_down(earlier, float(options.get("grace") or 10), "a new attempt of the job started")
    for name in ("ended", "workers-ended"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    script_copy(folder)
    try:
        quiet_optuna()
    except ImportError as error:
        raise StoreError(f"{error.name or 'optuna'} is not installed for {sys.executable} on this node; "
                         f"{not_installed()}") from None
    config = {key: options.get(key) for key in (
        "dir", "job_dir", "job_id", "attempt", "study", "direction", "nodes", "rank_attempt_dir", "url_file")}
    config.update(kind="external" if options.get("url_file") else "head", boot_id=boot_id(),
                  address=None, port=None, study_file=None, dashboard=bool(options.get("dashboard")),
                  dashboard_port=None, started=time.time(),
                  file_name=os.path.basename(options["study_file"]))  # a snapshot's name
    try:
        if config["kind"] == "head":
            config.update(study_file=options["study_file"], address=options["address"])
            os.makedirs(os.path.dirname(config["study_file"]), mode=0o700, exist_ok=True)
        else:
            url = read_url(config["url_file"])
            config["study_id"] = ensure_study(external_storage(url), config["study"], config["direction"])
        if config["kind"] == "head" or config["dashboard"]:
            start_on_free_ports(config, STORE, options, timeout)
        if config["kind"] == "head":
            config["study_id"] = prove_store(config, timeout)
        save_config(config)
    except BaseException:
        with contextlib.suppress(Exception):
            stop_process(config, STORE, 5)
        raise
    print(json.dumps({
        "host": config["address"], "port": config["port"], "study": config["study"],
        "direction": config["direction"], "kind": config["kind"], "study_file": config["study_file"],
        "study_id": config.get("study_id"), "dashboard_port": config["dashboard_port"], "dir": folder,
    }))


def start_on_free_ports(config: dict, name: str, options: dict, timeout: float) -> None:
    """Start NAME on the ports asked, else on free ports, tried up to five times:
    another process may take a free port between the pick and the bind."""
    serves = {"port": name == STORE and config["kind"] == "head",
              "dashboard_port": name == DASHBOARD or config["dashboard"]}
    wanted = {key: int(options.get(key) or 0) for key, used in serves.items() if used}
    if serves["dashboard_port"]:
        try:
            import optuna_dashboard  # noqa: F401
        except ImportError:
            raise StoreError(f"optuna-dashboard is not installed for {sys.executable} on this node; install "
                             "it there (pip install optuna-dashboard) or run without --dashboard") from None
    problem = None
    for _ in range(1 if any(wanted.values()) else 5):
        for key, port in wanted.items():
            config[key] = port or free_port(config["address"] if key == "port" else "127.0.0.1")
        save_config(config)  # the process reads its ports there
        spawn(config, name)
        problem = wait_ready(config, name, timeout)
        if problem is None:
            return
        stop_process(config, name, 5)
        if "already in use" not in problem:
            break
    config["dashboard_port"] = None
    if "dashboard port" in problem:
        raise StoreError(f"the dashboard did not start: {problem}"
                         + ("; choose another optuna_store_dashboard_port or leave it unset"
                            if wanted.get("dashboard_port") else ""))
    raise StoreError(f"{problem}; choose another optuna_store_port or leave it unset"
                     if wanted.get("port") else problem)


def prove_store(config: dict, timeout: float) -> int:
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


def shut_down(config: dict, grace: float, reason: str) -> dict | None:
    """Stop the store and the dashboard, then mark the study's RUNNING trials FAIL
    (with an external database, this job's only). None for another machine's store
    (a shared filesystem): not ours to stop."""
    if config.get("boot_id") and config["boot_id"] != boot_id():
        return None
    report = {"reason": reason, "failed_trials": 0,
              "stopped": [name for name in (STORE, DASHBOARD) if stop_process(config, name, grace)]}
    try:
        report["failed_trials"] = fail_job_trials(config, config_storage(config))
    except Exception as error:
        report["error"] = scrub(f"cannot mark running trials failed: {first_line(error)}",
                                url_or_none(config))
    if report["stopped"] or report["failed_trials"]:
        write_private(os.path.join(config["dir"], "ended"),
                      json.dumps({**report, "time": time.time()}) + "\n")
    return report


def stop(options: dict) -> None:
    config = load_config(options)
    report = config and shut_down(config, float(options.get("grace") or 10), "stopped by tsubmit")
    if report and (report["stopped"] or report["failed_trials"]):
        print(json.dumps(report))


def release(options: dict) -> None:
    config = load_config(options)
    if config is None or os.path.exists(os.path.join(config["dir"], "ended")):
        return
    write_private(os.path.join(config["dir"], "workers-ended"), f"{time.time()}\n")
    print("released")


def summary(options: dict) -> None:
    config = need_config(options)
    study = summarize(config_storage(config), config["study"], config["direction"])
    dashboard = running(config, DASHBOARD) or (config["dashboard"] and running(config, STORE))
    head = config["kind"] == "head"
    print(json.dumps({
        "study": config["study"], "direction": config["direction"], "storage": config["kind"],
        "store": ("running" if running(config, STORE) else "stopped") if head else "external",
        "endpoint": grpc_target(config["address"], config["port"]) if head else None,
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
            os.unlink(target)
            url = read_url(config["url_file"])
            external_storage(url)  # one clear line if it cannot be reached
            quiet_optuna().copy_study(from_study_name=config["study"], from_storage=url,
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
                      "file": config["file_name"]}))


def dashboard(options: dict) -> None:
    """Start a dashboard over the study unless one runs; print its port. With
    "state": "stopped", stop a dashboard started this way (not the job's own)."""
    config = need_config(options)
    if options.get("state") == "stopped":
        stopped = running(config, DASHBOARD) and stop_process(config, DASHBOARD, 5)
        if stopped:
            config["dashboard_port"] = None
            save_config(config)
        print(json.dumps({"stopped": bool(stopped)}))
        return
    if config.get("dashboard_port") and (running(config, DASHBOARD)
                                         or (config["dashboard"] and running(config, STORE))):
        print(json.dumps({"port": config["dashboard_port"], "started": False}))
        return
    script_copy(config["dir"])
    config["dashboard_port"] = None
    start_on_free_ports(config, DASHBOARD, options, float(options.get("timeout") or 60))
    save_config(config)
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


ACTIONS = {"start": start, "stop": stop, "release": release, "summary": summary, "snapshot": snapshot,
           "dashboard": dashboard, "check": check}


def main() -> None:
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 4:
        import store_serve

        try:
            store_serve.serve(*sys.argv[2:])
        except SystemExit:
            raise
        except BaseException as error:
            log(f"ERROR {first_line(error)}")
            traceback.print_exc()
            sys.exit(1)
        return
    if len(sys.argv) != 3 or sys.argv[1] not in ACTIONS:
        fail("\n\n".join(__doc__.split("\n\n")[1:3]))
    action, options = sys.argv[1], json.loads(sys.argv[2])
    for key in ("dir", "job_dir", "rank_attempt_dir", "study_file"):
        if options.get(key):  # a remote root of ~ is the node user's home
            options[key] = os.path.expanduser(options[key])
    try:
        ACTIONS[action](options)
    except StoreError as error:
        fail(str(error))
    except ImportError as error:
        fail(f"{error.name or error} is not installed for {sys.executable} on this node; {not_installed()}")
    except Exception as error:
        url = None
        with contextlib.suppress(Exception):
            url = url_or_none(load_config(options) or {})
        fail(scrub(f"optuna store {action} failed: {first_line(error)}", url))


if __name__ == "__main__":
    main()
