"""The study's storage, through Optuna: the SQLite file, the gRPC proxy, an external
database, and what the store does to a study (create it, fail its running trials).

Everything of the store that imports optuna is here, through Optuna's public
API only; its private gRPC API (the servicer, to serve without SO_REUSEPORT) is
tsubmit_optuna_grpc.add_storage_service, the file the workers' helper shares.
"""

from __future__ import annotations

import contextlib
import os
import sys

from store_base import StoreError, first_line, read_url
from store_urls import mask_url, scrub
from tsubmit_procs import is_ours, read_pid

JOB_ATTR = "tsubmit:job"

# pip packages of the database drivers SQLAlchemy imports, by module name.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
    "asyncpg": "asyncpg", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python", "mysql.connector": "mysql-connector-python",
}


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", message=".*experimental.*")
    return optuna


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


def served_storage(path: str):
    """What the gRPC server serves: Optuna's cached storage over the SQLite file PATH,
    already holding every trial of every study in it. A restarted server must know
    the trials its predecessor created: the cached storage looks a trial up in its
    cache (KeyError otherwise) when a worker sets a param of a trial that was
    RUNNING across the restart."""
    optuna = quiet_optuna()
    storage = optuna.storages.get_storage(rdb_storage(sqlite_url(path)))
    for study in storage.get_all_studies():
        storage.get_all_trials(storage.get_study_id_from_name(study.study_name), deepcopy=False)
    return storage


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
        with contextlib.suppress(UpdateFinishedTrialError, RuntimeError, KeyError):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
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
        pick = min if direction == "minimize" else max
        trial = pick(complete, key=lambda t: t.values[0])
        best = {"number": trial.number, "value": trial.values[0], "params": trial.params}
    return {"trials": counts, "total": len(trials), "best": best}
