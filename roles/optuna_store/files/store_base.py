"""What every part of a job's Optuna store uses: store.json and its processes'
folders, the one-line errors, private files, addresses and ports, and the
study's storage through Optuna's public API (its private gRPC API is
tsubmit_optuna_grpc.py's alone).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time

from store_urls import mask_url, scrub

STORE, DASHBOARD = "store", "dashboard"
NONCE_ATTR = "tsubmit:store"
JOB_ATTR = "tsubmit:job"
EXIT_BUSY = 3
WATCH_INTERVAL = 1.0
# pip packages of the database drivers SQLAlchemy imports, by module name.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
    "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python", "mysql.connector": "mysql-connector-python",
}


class StoreError(Exception):
    """A problem for the user: printed as one line, the script exits 1."""


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def last_error(log_path: str) -> str:
    """The last ERROR of a store process's log (else its last line)."""
    lines = [line.strip() for line in (read_text(log_path) or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR " in line:
            return line.split("ERROR ", 1)[1]
    return lines[-1] if lines else "no output"


def write_private(path: str, text: str) -> None:
    """Write a file atomically, mode 0600."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def boot_id() -> str:
    return (read_text("/proc/sys/kernel/random/boot_id") or "").strip()


# --------------------------------------------------------------------------- store.json and its processes


def read_config(folder: str) -> dict:
    with open(os.path.join(folder, "store.json")) as handle:
        return json.load(handle)


def load_config(options: dict) -> dict | None:
    """The store.json of the job; None when the job has no store on this node."""
    try:
        return read_config(options["dir"])
    except FileNotFoundError:
        return None


def need_config(options: dict) -> dict:
    config = load_config(options)
    if config is None:
        raise StoreError(f"no Optuna store for this job on this node ({options['dir']} is missing): "
                         "not an optuna job, or its folder was removed")
    return config


def save_config(config: dict) -> None:
    write_private(os.path.join(config["dir"], "store.json"), json.dumps(config, indent=1) + "\n")


def process_dir(config: dict, name: str) -> str:
    """The folder of the store's process NAME, as a rank's attempt folder."""
    return os.path.join(config["dir"], name, f"attempt-{config['attempt']}")


def read_url(url_file: str) -> str:
    url = (read_text(url_file) or "").strip()
    if not url:
        raise StoreError(f"the external storage URL file {url_file} is missing or empty")
    return url


def url_or_none(config: dict) -> str | None:
    """The external storage URL of CONFIG, to scrub from messages; None for the head store."""
    with contextlib.suppress(StoreError, KeyError):
        return read_url(config["url_file"]) if config.get("kind") == "external" else None
    return None


# --------------------------------------------------------------------------- addresses and ports


def free_port(address: str) -> int:
    with socket.socket(socket.getaddrinfo(address, None)[0][0], socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def bind_problem(address: str, port: int) -> str | None:
    """Why ADDRESS:PORT cannot be listened on (a plain bind without SO_REUSEPORT), or None."""
    try:
        with socket.socket(socket.getaddrinfo(address, None)[0][0], socket.SOCK_STREAM) as probe:
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


def grpc_target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --------------------------------------------------------------------------- Optuna, through its public API


def quiet_optuna():
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    return optuna


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"


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


def config_storage(config: dict):
    """The study's storage with nothing of the store running: the file or the external URL."""
    if config["kind"] == "external":
        return external_storage(read_url(config["url_file"]))
    if not os.path.exists(config["study_file"]):
        raise StoreError(f"the study file {config['study_file']} is gone")
    return rdb_storage(sqlite_url(config["study_file"]))


def ensure_study(storage, study: str, direction: str) -> int:
    """Create the study (or load it) and check it goes the asked direction; its id."""
    created = quiet_optuna().create_study(storage=storage, study_name=study, direction=direction,
                                          load_if_exists=True)
    found = [str(getattr(d, "name", d)).lower() for d in created.directions]
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
        with contextlib.suppress(UpdateFinishedTrialError, RuntimeError, KeyError):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed += 1
    return failed


def fail_job_trials(config: dict, storage) -> int:
    """The study's RUNNING trials marked FAIL: all of them in the store's own file,
    only this job's in an external database."""
    return fail_running_trials(storage, config["study"],
                               config["job_id"] if config["kind"] == "external" else None)


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
