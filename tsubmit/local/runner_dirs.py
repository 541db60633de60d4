"""The runner data dirs (state/runs): one per playbook run, with who made it
and how it ended; the secrets a killed run left are swept, and the dirs
pruned, before each run.
"""

import os
import time

from ..paths import state_dir

# Beside a runner data dir's files: "PID STARTTICKS" of the tsubmit that made them,
# and, once the run ended, its outcome ("successful" or why not).
RUN_OWNER_FILE = "owner"
RUN_OUTCOME_FILE = "outcome"
SUCCESSFUL = "successful"
# What stays of the runs: a failed one (or one whose tsubmit was killed) is kept
# to be diagnosed, the newest KEEP_FAILED_RUNS of them for FAILED_RUN_DAYS; a
# successful one only while its tsubmit may still read it (a watcher's, for
# SUCCESSFUL_RUN_SECONDS). TSUBMIT_KEEP_RUNS=1 keeps every run.
KEEP_FAILED_RUNS = 20
FAILED_RUN_DAYS = 7
SUCCESSFUL_RUN_SECONDS = 600


def process_identity(pid: int) -> str:
    """ "PID STARTTICKS": unlike the pid alone, it cannot match a later process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return f"{pid} {handle.read().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return ""


def remove_stale_run_secrets() -> None:
    """Remove the extra-vars (a job's secrets) that a tsubmit killed during a
    playbook run left in its runner data dir: each run removes its own when it
    ends. Called by every command that opens the store or runs a playbook."""
    for extravars in (state_dir() / "runs").glob("*/env/extravars"):
        try:
            owner = (extravars.parent.parent / RUN_OWNER_FILE).read_text()
        except OSError:
            owner = ""
        if not owner or process_identity(int(owner.split()[0])) != owner:
            extravars.unlink(missing_ok=True)


def prune_runs(now: float | None = None) -> None:
    """Bound the runner data dirs (state/runs) as RUN_OUTCOME_FILE's comment says;
    run before each playbook run, so no user has to."""
    import shutil

    runs = state_dir() / "runs"
    if os.environ.get("TSUBMIT_KEEP_RUNS") or not runs.is_dir():
        return
    now = time.time() if now is None else now
    failed = []
    for path in runs.iterdir():
        try:
            owner = (path / RUN_OWNER_FILE).read_text()
        except OSError:
            owner = ""
        alive = bool(owner) and process_identity(int(owner.split()[0])) == owner
        outcome_file = path / RUN_OUTCOME_FILE
        try:
            outcome, ended = outcome_file.read_text().strip(), outcome_file.stat().st_mtime
        except OSError:
            if alive:
                continue  # running
            outcome, ended = "killed", path.stat().st_mtime
        if outcome == SUCCESSFUL:
            if not alive or ended < now - SUCCESSFUL_RUN_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        else:
            failed.append((ended, path))
    failed.sort(reverse=True)
    for rank, (ended, path) in enumerate(failed):
        if rank >= KEEP_FAILED_RUNS or ended < now - FAILED_RUN_DAYS * 86400:
            shutil.rmtree(path, ignore_errors=True)
