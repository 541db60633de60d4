"""The Optuna study store of a tsubmit job, on its head node.

Usage (every argument but the action is one JSON object, which holds no secret:
an external storage URL is only ever read from the 0600 file named by
"url_file"):

  optuna_store.py start JSON       start the store (and the dashboard) for a job; print the endpoint
  optuna_store.py stop JSON        stop the watchdog, mark RUNNING trials FAIL, stop dashboard and store
  optuna_store.py release JSON     the controller saw every worker end: the watchdog stops the store
  optuna_store.py summary JSON     trials by state, best value and params (one JSON line)
  optuna_store.py snapshot JSON    a consistent copy of the study database (for `tsubmit optuna fetch`)
  optuna_store.py dashboard JSON   make sure a dashboard serves the study on 127.0.0.1; print its port
  optuna_store.py check JSON       the modules a worker needs import on this node

and, started detached by `start` and the watchdog (their own session and
process group, their own pid and log files under <job dir>/optuna/):

  optuna_store.py serve DIR              the gRPC storage proxy over the study's SQLite file
  optuna_store.py watch DIR              the watchdog
  optuna_store.py serve-dashboard DIR    optuna-dashboard, bound to 127.0.0.1

Files of a job's store, in <remote root>/<job id>/optuna/ (mode 0700):
  store.json            what start decided: study, file, address, port, dashboard port, ...
  optuna_store.py       this script, kept so the detached processes outlive the Ansible task
  server.{pid,log,ready} the gRPC server       pid files hold "PID STARTTICKS EPOCH": a pid
  watchdog.{pid,log}     the watchdog           is only signalled while its start time still
  dashboard.{pid,log,ready} the dashboard       matches, so a reused pid is never hit
  stopping              left by stop: nothing is restarted any more
  workers-ended         left by release
  ended                 why and when the store stopped
The study's SQLite file lives in <studies dir>/<study>.db (default
<remote root>/optuna-studies), so a later job with the same study continues
it; a lock file beside it lets one server at a time serve it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

STORE_FILE = "store.json"
STUDY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
NONCE_ATTR = "tsubmit:store"
JOB_ATTR = "tsubmit:job"
WATCH_INTERVAL = 1.0
RESTART_BACKOFF_MAX = 30.0
EXIT_BUSY = 3


class StoreError(Exception):
    """A problem for the user: printed as one line, the script exits 1."""


# --------------------------------------------------------------------------- small helpers


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    return optuna


def write_private(path: str, text: str) -> None:
    """Write a file atomically, mode 0600."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def boot_id() -> str:
    return (read_text("/proc/sys/kernel/random/boot_id") or "").strip()


def proc_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> str | None:
    fields = proc_fields(pid)
    if not fields or fields[0] == "Z":
        return None
    return fields[19]


def group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_fields(int(entry))
            if fields and fields[0] != "Z" and fields[2] == str(pgid):
                return True
    return False


def read_pid(path: str) -> tuple[int, str] | None:
    fields = (read_text(path) or "").split()
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1]


def is_ours(record: tuple[int, str] | None) -> bool:
    """The recorded process still runs (same pid and the same start time)."""
    return record is not None and start_ticks(record[0]) == record[1]


def spawn(argv: list[str], log_path: str, pid_path: str, cwd: str,
          env: dict | None = None) -> tuple[int, str]:
    """Start ARGV detached in its own session and process group; record "PID TICKS EPOCH"."""
    with open(log_path, "ab") as output:
        os.chmod(log_path, 0o600)
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=cwd,
            start_new_session=True, close_fds=True, env=env,
        )
    ticks = start_ticks(process.pid) or "0"
    write_private(pid_path, f"{process.pid} {ticks} {int(time.time())}\n")
    return process.pid, ticks


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


def free_port(address: str) -> int:
    family = socket.getaddrinfo(address, None)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def bind_problem(address: str, port: int) -> str | None:
    """Why ADDRESS:PORT cannot be listened on (a plain bind without SO_REUSEPORT), or None."""
    try:
        family = socket.getaddrinfo(address, None)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
            probe.listen(1)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return f"port {port} on {address} is already in use by another process"
        if error.errno == errno.EADDRNOTAVAIL:
            return (f"{address} is not an address of this node; set tsubmit_rdzv_address "
                    "(or optuna_store_address) to one of its addresses")
        return f"cannot listen on {address}:{port}: {error.strerror or error}"
    return None


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def grpc_target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def study_key(study: str) -> str:
    """The study's file name: the name itself when it is a safe file name."""
    if STUDY_KEY.match(study):
        return study
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._-")[:60] or "study"
    return f"{safe}-{hashlib.sha256(study.encode()).hexdigest()[:10]}"


# --------------------------------------------------------------------------- secrets


def read_url(url_file: str) -> str:
    url = (read_text(url_file) or "").strip()
    if not url:
        raise StoreError(f"the external storage URL file {url_file} is missing or empty")
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^@/?#]*)@(.*)$", url, re.S)
    if not match:
        return url
    scheme, userinfo, rest = match.groups()
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{userinfo}@{rest}"


def scrub(text: str, url: str | None) -> str:
    """TEXT with every form of URL's password (raw or percent-decoded) replaced by ***."""
    if not url:
        return text
    from urllib.parse import unquote, urlsplit

    text = text.replace(url, mask_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


# --------------------------------------------------------------------------- storages


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"


def rdb_storage(url: str):
    """An RDBStorage, with a connect timeout for network databases."""
    optuna = quiet_optuna()
    engine_kwargs = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "postgres", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def external_storage(url: str):
    """The external database as an Optuna storage; one clear line when it cannot be used."""
    driver = driver_problem(url)
    if driver:
        raise StoreError(f"the database driver for {mask_url(url).split('://')[0]}:// is missing for "
                         f"{sys.executable} on this node; install it there (pip install {driver})")
    try:
        return rdb_storage(url)
    except Exception as error:
        raise StoreError(scrub(f"cannot reach the external Optuna storage {mask_url(url)}: "
                               f"{first_line(error)}", url)) from None


def grpc_proxy(address: str, port: int, timeout: float):
    optuna = quiet_optuna()
    proxy = optuna.storages.GrpcStorageProxy(host=address, port=port)
    proxy.wait_server_ready(timeout=timeout)
    return proxy


def config_storage(config: dict, *, prefer_server: bool = True):
    """The study's storage for a maintenance step: through the running server when
    there is one (its cache stays right), else the file or the external URL."""
    if config["kind"] == "external":
        return external_storage(read_url(config["url_file"]))
    if prefer_server and is_ours(read_pid(os.path.join(config["dir"], "server.pid"))):
        with contextlib.suppress(Exception):
            return grpc_proxy(config["address"], config["port"], timeout=5)
    if not os.path.exists(config["study_file"]):
        raise StoreError(f"the study file {config['study_file']} is gone")
    return rdb_storage(sqlite_url(config["study_file"]))


def direction_name(direction) -> str:
    return str(getattr(direction, "name", direction)).lower()


def ensure_study(storage, study: str, direction: str) -> int:
    """Create the study (or load it) and check it goes the asked direction; its id."""
    optuna = quiet_optuna()
    created = optuna.create_study(storage=storage, study_name=study, direction=direction,
                                  load_if_exists=True)
    found = [direction_name(d) for d in created.directions]
    if found != [direction]:
        raise StoreError(f"study {study} already exists with direction {', '.join(found)}; run it with "
                         f"--direction {found[0]} or choose another --study")
    return storage.get_study_id_from_name(study)


def fail_running_trials(storage, study: str, job_id: str | None) -> int:
    """Mark the study's RUNNING trials FAIL (only JOB_ID's when given); how many."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        return 0
    failed = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if job_id is not None and trial.system_attrs.get(JOB_ATTR) != job_id:
            continue
        with contextlib.suppress(UpdateFinishedTrialError, RuntimeError):
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed += 1
    return failed


# --------------------------------------------------------------------------- config


def optuna_dir(job_dir: str) -> str:
    return os.path.join(os.path.expanduser(job_dir), "optuna")


def load_config(job_dir: str) -> dict | None:
    text = read_text(os.path.join(optuna_dir(job_dir), STORE_FILE))
    return json.loads(text) if text else None


def save_config(config: dict) -> None:
    write_private(os.path.join(config["dir"], STORE_FILE), json.dumps(config, indent=1) + "\n")


def script_copy(folder: str) -> str:
    """This script, kept in the job's folder: the detached processes outlive Ansible's copy."""
    target = os.path.join(folder, "optuna_store.py")
    if os.path.abspath(__file__) != target:
        shutil.copyfile(__file__, target + ".tmp")
        os.chmod(target + ".tmp", 0o600)
        os.replace(target + ".tmp", target)
    return target


# --------------------------------------------------------------------------- processes of a store


def start_server(config: dict) -> tuple[int, str]:
    folder = config["dir"]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, "server.ready"))
    return spawn([sys.executable, os.path.join(folder, "optuna_store.py"), "serve", folder],
                 os.path.join(folder, "server.log"), os.path.join(folder, "server.pid"), folder)


def start_dashboard(config: dict) -> tuple[int, str]:
    folder = config["dir"]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, "dashboard.ready"))
    return spawn([sys.executable, os.path.join(folder, "optuna_store.py"), "serve-dashboard", folder],
                 os.path.join(folder, "dashboard.log"), os.path.join(folder, "dashboard.pid"), folder)


def last_error(log_path: str) -> str:
    lines = [line.strip() for line in (read_text(log_path) or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR " in line:
            return line.split("ERROR ", 1)[1]
    return lines[-1] if lines else "no output"


def wait_ready(config: dict, name: str, record: tuple[int, str], timeout: float) -> str | None:
    """Wait for NAME's ready file; None when ready, else why it is not."""
    folder = config["dir"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(folder, f"{name}.ready")) and is_ours(record):
            return None
        if not is_ours(record):
            time.sleep(0.1)  # the ready file may land just before the exit
            if os.path.exists(os.path.join(folder, f"{name}.ready")) and is_ours(record):
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
                                    _url_or_none(config))
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


def _url_or_none(config: dict) -> str | None:
    if config.get("kind") != "external":
        return None
    try:
        return read_url(config["url_file"])
    except StoreError:
        return None


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


# --------------------------------------------------------------------------- actions


def action_start(options: dict) -> None:
    job_dir = os.path.realpath(os.path.expanduser(options["job_dir"]))
    folder = optuna_dir(job_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    timeout = float(options.get("timeout") or 60)
    grace = float(options.get("grace") or 10)
    # A store left from an earlier attempt of this job: stop it first.
    if load_config(job_dir) is not None:
        stop_store(job_dir, grace, "a new attempt of the job started")
    for marker in ("stopping", "ended", "workers-ended", "server.ready", "dashboard.ready"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, marker))
    script_copy(folder)
    try:
        quiet_optuna()
    except ImportError as error:
        raise StoreError(f"{error.name or 'optuna'} is not installed for {sys.executable} on this node; "
                         "install optuna>=4.2, grpcio and protobuf there") from None

    config = {
        "dir": folder, "job_dir": job_dir, "job_id": options["job_id"], "study": options["study"],
        "direction": options["direction"], "nodes": int(options["nodes"]),
        "attempt": int(options.get("attempt") or 1), "boot_id": boot_id(),
        "kind": "external" if options.get("url_file") else "head",
        "url_file": options.get("url_file"), "address": None, "port": None, "study_file": None,
        "dashboard": bool(options.get("dashboard")), "dashboard_port": None, "grace": grace,
        "started": time.time(),
    }
    started: dict[str, tuple[int, str]] = {}
    try:
        if config["kind"] == "head":
            start_head_store(config, options, started, timeout)
        else:
            url = read_url(config["url_file"])
            config["study_id"] = ensure_study(external_storage(url), config["study"], config["direction"])
            save_config(config)
        if config["dashboard"]:
            start_dashboard_checked(config, options, started, timeout)
        if config["kind"] == "head" or config["dashboard"]:
            started["watchdog"] = spawn(
                [sys.executable, os.path.join(folder, "optuna_store.py"), "watch", folder],
                os.path.join(folder, "watchdog.log"), os.path.join(folder, "watchdog.pid"), folder)
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


def start_head_store(config: dict, options: dict, started: dict, timeout: float) -> None:
    studies_dir = os.path.realpath(os.path.expanduser(options["studies_dir"]))
    os.makedirs(studies_dir, mode=0o700, exist_ok=True)
    config["study_file"] = os.path.join(studies_dir, study_key(config["study"]) + ".db")
    config["address"] = options["address"]
    wanted = int(options.get("port") or 0)
    for _ in range(1 if wanted else 5):
        config["port"] = wanted or free_port(config["address"])
        save_config(config)
        record = started["server"] = start_server(config)
        problem = wait_ready(config, "server", record, timeout)
        if problem is None:
            break
        started.pop("server")
        if wanted or "already in use" not in problem:
            raise StoreError(problem if not wanted else
                             f"{problem}; choose another optuna_store_port or leave it unset")
    else:
        raise StoreError(problem)
    config["study_id"] = prove_store(config, timeout)
    save_config(config)


def start_dashboard_checked(config: dict, options: dict, started: dict, timeout: float) -> None:
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise StoreError(f"optuna-dashboard is not installed for {sys.executable} on this node; "
                         "install it there (pip install optuna-dashboard) or run without --dashboard"
                         ) from None
    wanted = int(options.get("dashboard_port") or 0)
    for _ in range(1 if wanted else 5):
        config["dashboard_port"] = wanted or free_port("127.0.0.1")
        save_config(config)
        record = started["dashboard"] = start_dashboard(config)
        problem = wait_ready(config, "dashboard", record, timeout)
        if problem is None:
            return
        started.pop("dashboard")
        if wanted or "already in use" not in problem:
            break
    config["dashboard_port"] = None
    save_config(config)
    raise StoreError(f"the dashboard did not start: {problem}" +
                     ("; choose another optuna_store_dashboard_port or leave it unset" if wanted else ""))


def action_serve(folder: str) -> None:
    """The gRPC storage proxy over the study file: what run_grpc_proxy_server does, with
    SO_REUSEPORT off, so no other server can share the port with it, nor it with another."""
    with open(os.path.join(folder, STORE_FILE)) as handle:
        config = json.load(handle)
    address, port, path = config["address"], config["port"], config["study_file"]
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
    lock.write(f"job {config['job_id']} at {grpc_target(address, port)} (pid {os.getpid()})\n")
    lock.flush()

    problem = bind_problem(address, port)
    if problem:
        log(f"ERROR {problem}")
        sys.exit(EXIT_BUSY)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as database:
        database.execute("PRAGMA journal_mode=WAL")  # readers (status, fetch, dashboard) never block it
    optuna = quiet_optuna()
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    storage = optuna.storages.get_storage(rdb_storage(sqlite_url(path)))
    # A restarted server must know the trials its predecessor created: Optuna's
    # cached storage looks a trial up in its cache (KeyError otherwise) when a
    # worker sets a param of a trial that was RUNNING across the restart.
    for study in storage.get_all_studies():
        storage.get_all_trials(study._study_id, deepcopy=False)
    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
    try:
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.servicer import OptunaStorageProxyService
    except ImportError:  # another Optuna layout: its own server, still proven by start's nonce check
        log(f"serving {path} on {grpc_target(address, port)} with run_grpc_proxy_server")
        write_private(os.path.join(folder, "server.ready"), f"{os.getpid()} {port}\n")
        optuna.storages.run_grpc_proxy_server(storage, host=address, port=port)
        return
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
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
    write_private(os.path.join(folder, "server.ready"), f"{os.getpid()} {port}\n")
    log(f"serving study {config['study']} from {path} on {grpc_target(address, port)}")
    server.wait_for_termination()
    log("stopped")


def action_serve_dashboard(folder: str) -> None:
    with open(os.path.join(folder, STORE_FILE)) as handle:
        config = json.load(handle)
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
    write_private(os.path.join(folder, "dashboard.ready"), f"{os.getpid()} {port}\n")
    log(f"dashboard for study {config['study']} on http://127.0.0.1:{port}/")
    httpd.serve_forever()
    log("stopped")


def workers_ended(config: dict) -> str | None:
    """Why every worker of the job counts as ended, or None while one may still run.

    A rank has ended when its attempt folder holds an exit code or the stop
    marker, or its process is gone. Ranks whose folders this node cannot see
    (no shared filesystem) count as running until the controller says
    otherwise (`release`), or the job is stopped."""
    folder, job_dir = config["dir"], config["job_dir"]
    if os.path.exists(os.path.join(folder, "workers-ended")):
        return "every worker ended (reported by tsubmit)"
    for rank in range(config["nodes"]):
        attempt = os.path.join(job_dir, f"rank-{rank}", f"attempt-{config['attempt']}")
        if not os.path.isdir(attempt):
            return None
        if any(os.path.exists(os.path.join(attempt, name)) for name in ("exit_code", "stopped")):
            continue
        record = read_pid(os.path.join(attempt, "pid"))
        if record is None or is_ours(record) or group_alive(record[0]):
            return None
    return "every worker ended"


def action_watch(folder: str) -> None:
    """Restart the server (same port, same file) when it dies; stop the store once every
    worker ended or the job's folder is removed."""
    with open(os.path.join(folder, STORE_FILE)) as handle:
        config = json.load(handle)
    records = config["_records"] = {}
    stopping = {"now": False}

    def on_term(*_):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log(f"watching the store of job {config['job_id']} (study {config['study']})")
    failures = {"server": 0, "dashboard": 0}
    next_try = {"server": 0.0, "dashboard": 0.0}
    while not stopping["now"]:
        if os.path.exists(os.path.join(folder, "stopping")):
            break
        if not os.path.isdir(config["job_dir"]):
            report = shutdown(config, "the job's folder was removed", config["grace"])
            log(f"stopped: {report}")
            return
        reason = workers_ended(config)
        if reason:
            report = shutdown(config, reason, config["grace"])
            log(f"stopped: {json.dumps(report)}")
            return
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


def action_stop(options: dict) -> None:
    report = stop_store(options["job_dir"], float(options.get("grace") or 10), "stopped by tsubmit")
    if report is not None and (report["stopped"] or report["failed_trials"]):
        print(json.dumps(report))
    if report is not None and report.get("still_listening"):
        fail(f"still listening after the stop: {', '.join(report['still_listening'])}")


def action_release(options: dict) -> None:
    config = load_config(options["job_dir"])
    if config is None or os.path.exists(os.path.join(config["dir"], "ended")):
        return
    write_private(os.path.join(config["dir"], "workers-ended"), f"{time.time()}\n")
    print("released")


def need_config(options: dict) -> dict:
    config = load_config(options["job_dir"])
    if config is None:
        raise StoreError(f"no Optuna store for this job on this node ({optuna_dir(options['job_dir'])} "
                         "is missing): not an optuna job, or its folder was removed")
    return config


def action_summary(options: dict) -> None:
    config = need_config(options)
    from optuna.trial import TrialState

    storage = config_storage(config, prefer_server=False)
    study_id = storage.get_study_id_from_name(config["study"])
    trials = storage.get_all_trials(study_id, deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    best = None
    if complete:
        pick = min if config["direction"] == "minimize" else max
        trial = pick(complete, key=lambda t: t.values[0])
        best = {"number": trial.number, "value": trial.values[0], "params": trial.params}
    server = is_ours(read_pid(os.path.join(config["dir"], "server.pid")))
    dashboard = is_ours(read_pid(os.path.join(config["dir"], "dashboard.pid")))
    print(json.dumps({
        "study": config["study"], "direction": config["direction"], "storage": config["kind"],
        "store": ("running" if server else "stopped") if config["kind"] == "head" else "external",
        "endpoint": grpc_target(config["address"], config["port"]) if config["kind"] == "head" else None,
        "dashboard_port": config.get("dashboard_port") if dashboard else None,
        "trials": counts, "total": len(trials), "best": best,
    }, default=str))


def action_snapshot(options: dict) -> None:
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


def action_dashboard(options: dict) -> None:
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
    start_dashboard_checked(config, options, started, float(options.get("timeout") or 60))
    print(json.dumps({"port": config["dashboard_port"], "started": True}))


# pip packages of the database drivers SQLAlchemy imports, by module name.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
    "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python", "mysql.connector": "mysql-connector-python",
}


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


def action_check(options: dict) -> None:
    """The modules a worker imports, for the node's python: optuna and grpcio with the
    head-node store, optuna and the database's driver with an external one."""
    scheme = options.get("scheme") or ""
    wanted = [("optuna", "optuna>=4.2")]
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
    print(json.dumps({"ok": True}))


ACTIONS = {
    "start": action_start, "stop": action_stop, "release": action_release, "summary": action_summary,
    "snapshot": action_snapshot, "dashboard": action_dashboard, "check": action_check,
}
DAEMONS = {"serve": action_serve, "watch": action_watch, "serve-dashboard": action_serve_dashboard}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in {**ACTIONS, **DAEMONS}:
        fail(__doc__.split("\n\n")[1])
    action, argument = sys.argv[1:]
    if action in DAEMONS:
        try:
            DAEMONS[action](argument)
        except SystemExit:
            raise
        except BaseException as error:
            log(f"ERROR {first_line(error)}")
            traceback.print_exc()
            sys.exit(1)
        return
    options = json.loads(argument)
    try:
        ACTIONS[action](options)
    except StoreError as error:
        fail(str(error))
    except ImportError as error:
        fail(f"{error.name or error} is not installed for {sys.executable} on this node; "
             "install optuna>=4.2, grpcio and protobuf there")
    except Exception as error:
        url = None
        with contextlib.suppress(Exception):
            config = load_config(options.get("job_dir", ""))
            url = _url_or_none(config) if config else None
        fail(scrub(f"optuna store {action} failed: {first_line(error)}", url))


if __name__ == "__main__":
    main()
