"""The study of an Optuna job, read on its head through the optuna_store role's
task files (playbooks optuna_summary, optuna_fetch, optuna_release):
`study_summary` for `tsubmit status`, `fetch_study`, and `release_store`
(tell the store every worker ended, so it stops).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LaunchError, UsageError

SUMMARY_TASK = "Summarize the job's Optuna study"
SNAPSHOT_TASK = "Snapshot the job's Optuna study database"


# --------------------------------------------------------------------------- the study of a job


def run_on_head(job, playbook: str, extravars: dict, *, verbose: int = 0):
    """Run PLAYBOOK on the job's head only; (run, the head's name)."""
    from ..nodes.actions import run_for_job

    head = job.ranks[0].host
    run = run_for_job(job, playbook, extravars, hosts={head: {"tsubmit_rank": 0}}, verbose=verbose)
    return run, head


def task_json(run, head: str, task: str) -> dict:
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
        run, head = run_on_head(job, "optuna_summary", {}, verbose=verbose)
        return task_json(run, head, SUMMARY_TASK)
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
        run, head = run_on_head(job, "optuna_fetch", {"optuna_store_fetch_dest": str(download)},
                              verbose=verbose)
        snapshot = task_json(run, head, SNAPSHOT_TASK)
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
    run, _ = run_on_head(job, "optuna_release", {}, verbose=verbose)
    return not run.failures()
