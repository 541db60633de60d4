"""The runner data dirs under the state folder stay bounded without the user's
help (issue 26, item 18): a successful run's folder goes once its tsubmit is done
with it, failed ones stay to be diagnosed, the newest few for a week."""

import os
import time

import pytest

from tsubmit.local import runner_dirs


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path))
    monkeypatch.delenv("TSUBMIT_KEEP_RUNS", raising=False)
    folder = tmp_path / "state" / "runs"
    folder.mkdir(parents=True)
    return folder


ME = runner_dirs.process_identity(os.getpid())
GONE = "4194303 1"  # above any pid_max: no process has it


def make_run(runs, name, owner, outcome=None, ended=None):
    path = runs / name
    path.mkdir()
    (path / runner_dirs.RUN_OWNER_FILE).write_text(owner)
    if outcome is not None:
        (path / runner_dirs.RUN_OUTCOME_FILE).write_text(outcome)
        os.utime(path / runner_dirs.RUN_OUTCOME_FILE, (ended, ended))
    elif ended is not None:
        os.utime(path, (ended, ended))
    return path


def test_successful_runs_go_once_their_tsubmit_is_done_with_them(runs):
    now = time.time()
    make_run(runs, "ended-ok", GONE, runner_dirs.SUCCESSFUL, now)
    make_run(runs, "mine-just-now", ME, runner_dirs.SUCCESSFUL, now - 5)
    make_run(runs, "mine-long-ago", ME, runner_dirs.SUCCESSFUL, now - runner_dirs.SUCCESSFUL_RUN_SECONDS - 1)
    make_run(runs, "mine-running", ME)
    make_run(runs, "failed", GONE, "failed", now)
    make_run(runs, "killed", GONE, None, now)
    runner_dirs.prune_runs(now)
    assert sorted(path.name for path in runs.iterdir()) == ["failed", "killed", "mine-just-now",
                                                            "mine-running"]


def test_failed_runs_are_kept_up_to_a_count_and_an_age(runs):
    now = time.time()
    for number in range(runner_dirs.KEEP_FAILED_RUNS + 5):
        make_run(runs, f"failed-{number:02d}", GONE, "failed", now - number)
    make_run(runs, "old", GONE, "failed", now - runner_dirs.FAILED_RUN_DAYS * 86400 - 1)
    runner_dirs.prune_runs(now)
    assert sorted(path.name for path in runs.iterdir()) == [
        f"failed-{number:02d}" for number in range(runner_dirs.KEEP_FAILED_RUNS)]


def test_keep_runs_keeps_every_run(runs, monkeypatch):
    monkeypatch.setenv("TSUBMIT_KEEP_RUNS", "1")
    make_run(runs, "ended-ok", GONE, runner_dirs.SUCCESSFUL, time.time())
    runner_dirs.prune_runs()
    assert [path.name for path in runs.iterdir()] == ["ended-ok"]
