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

The store is managed as a rank is: `optuna_store.py serve DIR NAME` runs detached
under SUPERVISE with the rank marker (TSUBMIT_RANK_MARKER=JOB.rNAME.aATTEMPT), its
pid, output.log, ready and exit_code in <job dir>/optuna/NAME/attempt-K/, stopped
by stop.sh. NAME "store" serves the study file over gRPC (and the job's
dashboard) until every worker ended; NAME "dashboard" is `tsubmit optuna dashboard`'s.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import store_study as study
from store_study import StoreError, log
from store_urls import scrub
from tsubmit_procs import group_alive, is_ours, pid_record, read_pid

STORE, DASHBOARD = "store", "dashboard"
# What keeps a store's process up, as launch.sh keeps a rank's command: started
# again (after 1, 2, 4 ... 30 s) whenever it dies, unless it ended by itself (0)
# or never came up (the starter reports why). $1 python, $2 this script, $3 the
# store's folder, $4 NAME, $5 the attempt's folder.
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


def read_text(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def write_private(path: str, text: str) -> None:
    """Write a file atomically, mode 0600."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def boot_id() -> str:
    return read_text("/proc/sys/kernel/random/boot_id").strip()


def load_config(folder: str, *, needed: bool = True) -> dict | None:
    """The job's store.json; None (or, when NEEDED, an error) when the job has no store on this node."""
    try:
        with open(os.path.join(folder, "store.json")) as handle:
            return json.load(handle)
    except FileNotFoundError:
        if needed:
            raise StoreError(f"no Optuna store for this job on this node ({folder} is missing): "
                             "not an optuna job, or its folder was removed") from None
        return None


def save_config(config: dict) -> None:
    write_private(os.path.join(config["dir"], "store.json"), json.dumps(config, indent=1) + "\n")


def end(config: dict, reason: str, stopped: list[str], storage=None, *, always: bool = True) -> dict:
    """The study's RUNNING trials marked FAIL; why the store ended, in `ended`
    (ALWAYS, else only when something was stopped or failed)."""
    report = {"reason": reason, "failed_trials": 0, "stopped": stopped}
    try:
        report["failed_trials"] = study.fail_running_trials(config, storage or study.config_storage(config))
    except Exception as error:
        report["error"] = scrub(f"cannot mark running trials failed: {study.first_line(error)}",
                                study.url_or_none(config))
    if (always or stopped or report["failed_trials"]) and os.path.isdir(config["dir"]):
        write_private(os.path.join(config["dir"], "ended"),
                      json.dumps({**report, "time": time.time()}) + "\n")
    return report


def process_dir(config: dict, name: str) -> str:
    """The folder of the store's process NAME, as a rank's attempt folder."""
    return os.path.join(config["dir"], name, f"attempt-{config['attempt']}")


def running(config: dict, name: str) -> bool:
    return is_ours(read_pid(os.path.join(process_dir(config, name), "pid")))


def dashboard_running(config: dict) -> bool:
    return running(config, DASHBOARD) or (config["dashboard"] and running(config, STORE))


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
    """None once NAME listens, else why not."""
    here = process_dir(config, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(here, "ready")):
            return None
        if os.path.exists(os.path.join(here, "exit_code")):  # its last ERROR, else its last line
            lines = [line.strip() for line in read_text(os.path.join(here, "output.log")).splitlines()
                     if line.strip()]
            return ([line.split("ERROR ", 1)[1] for line in lines if "ERROR " in line] or lines
                    or ["no output"])[-1]
        time.sleep(0.05)
    return f"the {name} did not start within {timeout:g}s (see {here}/output.log)"


def stop_process(config: dict, name: str, grace: float) -> bool:
    """Stop NAME as a rank is stopped (stop.sh, shipped beside this script); True if it ran."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stop.sh")
    stopped = subprocess.run(["/bin/sh", script, os.path.join(config["dir"], name), config["job_id"], name,
                              str(int(grace))], capture_output=True, text=True)
    if stopped.returncode != 0:
        raise StoreError(f"the {name} did not stop: {study.first_line(Exception(stopped.stderr))}")
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
    for _ in range(1 if any(wanted.values()) else 5):
        for key, port in wanted.items():
            config[key] = port or study.probe_port(config["address"] if key == "port" else "127.0.0.1", 0)
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


def workers_state(config: dict) -> tuple[str | None, str | None]:
    """(why every worker of the job counts as ended, None), or (None, the rank the
    store waits for, said as it logs it).

    A rank has ended when its attempt folder (config["rank_attempt_dir"] % rank,
    the launch contract's) holds an exit code or the stop marker, or its process
    is gone. Ranks whose folders this node cannot see (no shared filesystem)
    count as running until the controller says otherwise (`release`)."""
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
    """The process NAME: it writes its ready file once it listens and stops on
    SIGTERM (stop.sh); the store ends by itself once every worker ended."""
    config = load_config(folder)
    reason = name == STORE and workers_state(config)[0]
    if reason:  # the workers ended while it was down (a restart that kept failing)
        end(config, reason, [])
        return
    storage, stoppers = None, []
    if name == STORE and config["kind"] == "head":
        lock = study.hold_study_lock(config)  # noqa: F841 - the lock lasts as long as the server
        storage, stop_grpc = study.start_grpc(config)
        stoppers.append(stop_grpc)
    if name == DASHBOARD or config["dashboard"]:
        stoppers.insert(0, study.start_dashboard(config))
    ended = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ended.set())
    write_private(os.path.join(process_dir(config, name), "ready"), f"{os.getpid()}\n")
    waiting = None
    while not ended.wait(1.0):
        if name != STORE:
            continue
        reason, still = workers_state(config)
        if reason:
            for stopper in stoppers:
                stopper()
            report = end(config, reason, ([DASHBOARD] if config["dashboard"] else [])
                         + (["server"] if storage else []), storage)
            log(f"stopped: {json.dumps(report)}")
            return
        if still != waiting:  # what keeps the store up, each time it changes
            waiting = still
            log(f"waiting for {waiting}")
    for stopper in stoppers:
        stopper()
    log("stopped")
    sys.exit(128 + signal.SIGTERM)  # not an end of its own: the supervisor starts it again


def start(options: dict) -> None:
    folder = options["dir"]
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    if options.get("url_file"):  # shipped beside this script (0600): kept in the store's folder
        options["url_file"] = os.path.join(folder, "storage-url")
        shipped = os.path.join(os.path.dirname(__file__), "storage-url")
        write_private(options["url_file"], study.read_url(shipped))
    timeout = float(options.get("timeout") or 60)
    earlier = load_config(folder, needed=False)
    if earlier is not None:  # a store left from an earlier attempt of this job: stop it first
        shut_down(earlier, float(options.get("grace") or 10), "a new attempt of the job started")
    for name in ("ended", "workers-ended"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    script_copy(folder)
    study.quiet_optuna()
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
            storage = study.config_storage(config)
            config["study_id"] = study.ensure_study(storage, config["study"], config["direction"])
        if config["kind"] == "head" or config["dashboard"]:
            start_on_free_ports(config, STORE, options, timeout)
        if config["kind"] == "head":
            config["study_id"] = study.prove_served(config, timeout)
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


def shut_down(config: dict, grace: float, reason: str) -> dict | None:
    """Stop the store and the dashboard, then fail the RUNNING trials. None for
    another machine's store (a shared filesystem): not ours to stop."""
    if config.get("boot_id") and config["boot_id"] != boot_id():
        return None
    stopped = [name for name in (STORE, DASHBOARD) if stop_process(config, name, grace)]
    return end(config, reason, stopped, always=False)


def stop(options: dict) -> None:
    config = load_config(options["dir"], needed=False)
    report = config and shut_down(config, float(options.get("grace") or 10), "stopped by tsubmit")
    if report and (report["stopped"] or report["failed_trials"]):
        print(json.dumps(report))


def release(options: dict) -> None:
    config = load_config(options["dir"], needed=False)
    if config is None or os.path.exists(os.path.join(config["dir"], "ended")):
        return
    write_private(os.path.join(config["dir"], "workers-ended"), f"{time.time()}\n")
    print("released")


def summary(options: dict) -> None:
    config = load_config(options["dir"])
    trials = study.summarize(study.config_storage(config), config["study"], config["direction"])
    head = config["kind"] == "head"
    print(json.dumps({
        "study": config["study"], "direction": config["direction"], "storage": config["kind"],
        "store": ("running" if running(config, STORE) else "stopped") if head else "external",
        "endpoint": study.grpc_target(config["address"], config["port"]) if head else None,
        "dashboard_port": config.get("dashboard_port") if dashboard_running(config) else None,
        **trials,
    }, default=str))


def snapshot(options: dict) -> None:
    """A consistent copy of the study, beside store.json."""
    config = load_config(options["dir"])
    handle, target = tempfile.mkstemp(prefix="snapshot-", suffix=".db", dir=config["dir"])
    os.close(handle)
    os.chmod(target, 0o600)
    try:
        trials = study.copy_study(config, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        raise
    print(json.dumps({"path": target, "study": config["study"], "trials": trials,
                      "file": config["file_name"]}))


def check(options: dict) -> None:
    """The modules a worker imports are there for the node's python."""
    problem = study.worker_problem(options.get("scheme") or "")
    if problem:
        raise StoreError(problem)
    print(json.dumps({"ok": True}))


def dashboard(options: dict) -> None:
    """Start a dashboard over the study unless one runs; print its port. With
    "state": "stopped", stop a dashboard started this way (not the job's own)."""
    config = load_config(options["dir"])
    if options.get("state") == "stopped":
        stopped = running(config, DASHBOARD) and stop_process(config, DASHBOARD, 5)
        if stopped:
            config["dashboard_port"] = None
            save_config(config)
        print(json.dumps({"stopped": bool(stopped)}))
        return
    if config.get("dashboard_port") and dashboard_running(config):
        print(json.dumps({"port": config["dashboard_port"], "started": False}))
        return
    script_copy(config["dir"])
    config["dashboard_port"] = None
    start_on_free_ports(config, DASHBOARD, options, float(options.get("timeout") or 60))
    save_config(config)
    print(json.dumps({"port": config["dashboard_port"], "started": True}))


ACTIONS = {"start": start, "stop": stop, "release": release, "summary": summary, "snapshot": snapshot,
           "dashboard": dashboard, "check": check}


def main() -> None:
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 4:
        try:
            serve(*sys.argv[2:])
        except StoreError as error:
            log(f"ERROR {error}")
            sys.exit(1)
        except Exception as error:
            log(f"ERROR {study.first_line(error)}")
            traceback.print_exc()
            sys.exit(1)
        return
    if len(sys.argv) != 3 or sys.argv[1] not in ACTIONS:
        sys.exit("\n\n".join(__doc__.split("\n\n")[1:3]))
    action, options = sys.argv[1], json.loads(sys.argv[2])
    for key in ("dir", "job_dir", "rank_attempt_dir", "study_file"):
        if options.get(key):  # a remote root of ~ is the node user's home
            options[key] = os.path.expanduser(options[key])
    try:
        ACTIONS[action](options)
    except StoreError as error:
        sys.exit(str(error))
    except ImportError as error:
        from tsubmit_optuna_grpc import OPTUNA_REQUIREMENT

        sys.exit(f"{error.name or error} is not installed for {sys.executable} on this node; "
                 f"install {OPTUNA_REQUIREMENT}, grpcio and protobuf there")
    except Exception as error:
        url = None
        with contextlib.suppress(Exception):
            url = study.url_or_none(load_config(options["dir"], needed=False) or {})
        sys.exit(scrub(f"optuna store {action} failed: {study.first_line(error)}", url))


if __name__ == "__main__":
    main()
