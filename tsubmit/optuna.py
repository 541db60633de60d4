"""Optuna on the controller side.

* Named external storages (`tsubmit db add/list/remove`): a YAML mapping
  name -> URL in `<config dir>/optuna-storages.yml`, mode 0600, since URLs may
  hold passwords. URLs are shown with the password masked, never in full.
* `resolve_storage` / `validate_storage_url`: what `--optuna-storage` accepts
  (a URL or a storage name).
* The study of an Optuna job, read on its head through the optuna_store role's
  task files (playbooks optuna_summary, optuna_fetch, optuna_dashboard,
  optuna_release): `study_summary` for `tsubmit status`, `fetch_study`,
  `open_dashboard` / `forward_dashboard` / `close_dashboard`, and
  `release_store` (tell the store every worker ended, so it stops).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .errors import LaunchError, UsageError
from .paths import ansible_dir, config_dir, ensure_private_dir
from .places import places
from .ports import free_local_port
from .ssh_session import Session, forward

STORAGES_FILE = "optuna-storages.yml"
DIRECTIONS = ("minimize", "maximize")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCHEME = re.compile(r"^(postgresql|mysql)(\+[a-z0-9_]+)?$")
_EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
SUMMARY_TASK = "Summarize the job's Optuna study"
SNAPSHOT_TASK = "Snapshot the job's Optuna study database"
DASHBOARD_TASK = "Make sure a dashboard serves the job's Optuna study"


# --------------------------------------------------------------------------- URLs


def mask_url(url: str) -> str:
    """URL with its password replaced by ***, for printing: the head's own code
    (roles/optuna_store/files/store_urls.py), so both sides mask a URL alike."""
    return _node_urls().mask_url(url)


@functools.cache
def _node_urls():
    path = ansible_dir() / "roles" / "optuna_store" / "files" / "store_urls.py"
    spec = importlib.util.spec_from_file_location("tsubmit._optuna_store_urls", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validate_storage_url(url: str) -> str:
    """URL if it names a PostgreSQL or MySQL database SQLAlchemy can parse; else a
    UsageError of one line (with the password masked)."""
    def bad(reason: str) -> UsageError:
        return UsageError(f"invalid Optuna storage URL {mask_url(url)!r}: {reason}; expected e.g. {_EXAMPLE}")

    if not url or re.search(r"[\s\x00-\x1f\x7f]", url):
        raise bad("it is empty or holds spaces or control characters")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise bad("no scheme:// (give a URL, or the name of a storage from `tsubmit db list`)")
    if scheme.startswith(("sqlite", "grpc")):
        raise bad("SQLite files and gRPC addresses cannot be shared by nodes as an external storage; "
                  "leave --optuna-storage out to use the head-node store")
    if scheme in ("postgres",) or scheme.startswith("postgres+"):
        raise bad("SQLAlchemy calls the dialect postgresql, not postgres")
    if not _SCHEME.match(scheme):
        raise bad(f"unsupported scheme {scheme!r} (use postgresql:// or mysql://, optionally +driver)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise bad(str(error)) from None
    if parts.netloc.count("@") > 1:
        raise bad("percent-encode special characters of the user and password (@ as %40, : as %3A)")
    if not parts.hostname:
        raise bad("no host")
    if not parts.path.strip("/"):
        raise bad("no database name after the host")
    return url


# --------------------------------------------------------------------------- named storages


def storages_file() -> Path:
    return config_dir() / STORAGES_FILE


def load_storages() -> dict[str, str]:
    path = storages_file()
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UsageError(f"{path} must be a mapping of storage names to URLs")
    return {str(key): value for key, value in data.items()}


def _save_storages(storages: dict[str, str]) -> None:
    path = storages_file()
    ensure_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# Optuna storages for `tsubmit run --optuna-storage NAME` (mode 0600: URLs may "
                     "hold passwords)\n")
        handle.write(yaml.safe_dump(storages, sort_keys=True) if storages else "{}\n")
    os.replace(temporary, path)


def check_storage_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UsageError(f"invalid storage name {name!r}: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit")
    return name


def add_storage(name: str, url: str, *, replace: bool = False) -> None:
    check_storage_name(name)
    validate_storage_url(url)
    storages = load_storages()
    if name in storages and not replace:
        raise UsageError(f"a storage named {name} exists already ({mask_url(storages[name])}); "
                         "add --replace to change it")
    storages[name] = url
    _save_storages(storages)


def remove_storage(name: str) -> str:
    storages = load_storages()
    if name not in storages:
        raise UsageError(f"no Optuna storage named {name} (see `tsubmit db list`)")
    url = storages.pop(name)
    _save_storages(storages)
    return url


def list_storages() -> list[dict]:
    """Every named storage, its URL masked."""
    return [{"name": name, "url": mask_url(url)} for name, url in sorted(load_storages().items())]


def resolve_storage(value: str | None) -> str | None:
    """What --optuna-storage names: None (the head-node store), a URL, or a storage name."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    if "://" in value:
        return validate_storage_url(value)
    if not _NAME.match(value):
        raise UsageError(f"--optuna-storage {mask_url(value)!r} is neither a URL ({_EXAMPLE}) nor the "
                         "name of a storage from `tsubmit db list`")
    storages = load_storages()
    if value not in storages:
        raise UsageError(f"no Optuna storage named {value}; add it with `tsubmit db add {value} URL` "
                         "or give a URL")
    return validate_storage_url(storages[value])


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction must be minimize or maximize, not {direction!r}")
    return direction


# --------------------------------------------------------------------------- the study of a job


def _head_run(job, playbook: str, extravars: dict, *, verbose: int = 0):
    """Run PLAYBOOK on the job's head only; (run, the head's name)."""
    from .node_actions import run_for_job

    head = job.ranks[0].host
    run = run_for_job(job, playbook, extravars, hosts={head: {"tsubmit_rank": 0}}, verbose=verbose)
    return run, head


def _stdout_json(run, head: str, task: str) -> dict:
    failures = run.failures()
    if failures:
        raise LaunchError(f"cannot read the Optuna study of the job on its head {head}", failures)
    try:
        return json.loads(run.hosts[head].results[task]["stdout"])
    except (KeyError, ValueError):
        raise LaunchError(f"the head {head} did not report on the Optuna study "
                          f"(see {run.data_dir}/artifacts)") from None


def study_summary(job, *, verbose: int = 0) -> dict:
    """Trials by state and the best so far, read on the head (for `tsubmit status`).

    Never raises for a node problem: {"error": message} then, so status can
    still show the ranks. Keys: study, direction, storage (head|external),
    store (running|stopped|external), endpoint, dashboard_port, trials
    ({state: count}), total, best ({number, value, params} or None)."""
    try:
        run, head = _head_run(job, "optuna_summary", {}, verbose=verbose)
        return _stdout_json(run, head, SUMMARY_TASK)
    except LaunchError as error:
        details = "; ".join(error.host_errors.values())
        return {"error": f"{error}: {details}" if details else str(error)}


def format_summary(summary: dict) -> list[str]:
    """Lines for `tsubmit status`."""
    if "error" in summary:
        return [f"optuna: {summary['error']}"]
    where = ("head-node store " + ("at " + summary["endpoint"] if summary["store"] == "running"
                                   else "(stopped)")) if summary["storage"] == "head" else "external database"
    lines = [f"optuna study {summary['study']} ({summary['direction']}), {where}"]
    counts = ", ".join(f"{state.lower()} {count}" for state, count in sorted(summary["trials"].items()))
    lines.append(f"  trials: {summary['total']}" + (f" ({counts})" if counts else ""))
    best = summary.get("best")
    if best:
        params = ", ".join(f"{key}={value}" for key, value in best["params"].items())
        lines.append(f"  best: {best['value']:g} (trial {best['number']}: {params})")
    if summary.get("dashboard_port"):
        lines.append(f"  dashboard: on the head at 127.0.0.1:{summary['dashboard_port']} "
                     f"(tsubmit optuna dashboard JOB forwards it)")
    return lines


def fetch_study(job, path: str | Path | None = None, *, force: bool = False, verbose: int = 0) -> dict:
    """Copy the study database back (a consistent snapshot); {"path", "study", "trials"}.
    PATH defaults to ./<study>.db; an existing file is kept unless FORCE."""
    import tempfile

    target = Path(path) if path else None
    if target is not None and target.is_dir():
        target = target / "study.db"  # renamed after the run, once the study name is known
        named_in_dir = True
    else:
        named_in_dir = False
    if target is not None and not named_in_dir and target.exists() and not force:
        raise UsageError(f"{target} exists; add --force to overwrite it")
    folder = (target.parent if target is not None else Path.cwd()).resolve()
    if not folder.is_dir():
        raise UsageError(f"folder {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix=".tsubmit-fetch-", dir=folder) as scratch:
        download = Path(scratch) / "study.db"
        run, head = _head_run(job, "optuna_fetch", {"optuna_store_fetch_dest": str(download)},
                              verbose=verbose)
        snapshot = _stdout_json(run, head, SNAPSHOT_TASK)
        if not download.is_file():
            raise LaunchError(f"the study database was not copied from {head} "
                              f"(see {run.data_dir}/artifacts)")
        if target is None or named_in_dir:
            target = folder / snapshot["file"]
            if target.exists() and not force:
                raise UsageError(f"{target} exists; add --force to overwrite it, or give another PATH")
        download.chmod(0o600)
        os.replace(download, target)
    return {"path": str(target), "study": snapshot["study"], "trials": snapshot["trials"]}


def release_store(job, *, verbose: int = 0) -> bool:
    """Tell the job's store every worker ended (it then stops itself); True if told.

    For the refresh path: call it once an optuna job is found finished. The
    store sees the ranks' exit codes by itself only when the remote root
    is a filesystem the nodes share."""
    run, _ = _head_run(job, "optuna_release", {}, verbose=verbose)
    return not run.failures()


def open_dashboard(job, *, port: int = 0, verbose: int = 0) -> dict:
    """Make sure a dashboard serves the study on the head's 127.0.0.1: {"port", "started"}."""
    run, head = _head_run(job, "optuna_dashboard", {"optuna_store_dashboard_state": "started",
                                                    "optuna_store_dashboard_port": port}, verbose=verbose)
    return _stdout_json(run, head, DASHBOARD_TASK)


def close_dashboard(job, *, verbose: int = 0) -> None:
    """Stop a dashboard open_dashboard started (the job's own stays until the job ends)."""
    _head_run(job, "optuna_dashboard", {"optuna_store_dashboard_state": "stopped"}, verbose=verbose)


def forward_dashboard(job, remote_port: int, local_port: int | None = None) -> tuple[Session | None, str]:
    """Start forwarding the head's dashboard port; (the forward's ssh session or None,
    the local URL). A head on a local connection needs no forwarding."""
    [place] = places(job, job.ranks[:1])
    if place.conn.local:
        return None, f"http://127.0.0.1:{remote_port}/"
    local_port = local_port or free_local_port()
    session = forward(place.conn, place.where, local_port, remote_port, option="--port")
    return session, f"http://127.0.0.1:{local_port}/"
