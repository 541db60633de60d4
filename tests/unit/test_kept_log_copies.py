"""The controller's copies of the ranks' logs (tsubmit/local/kept_logs.py), kept up to
date piece by piece from what the status role's rank_status.py sends."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tsubmit.local import kept_logs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path / "home"))


def copy(job="j1") -> list[str]:
    return kept_logs.read(job, 1, 1)[0]


def test_pieces_that_follow_each_other_make_the_copy_and_its_end_is_where_the_next_starts():
    assert kept_logs.end("j1", 1, 1) == 0 and kept_logs.read("j1", 1, 1) is None
    kept_logs.keep("j1", 1, 1, "line 0\nline 1\n", 0, 14)
    kept_logs.keep("j1", 1, 1, "line 2\n", 14, 21)
    assert copy() == ["line 0", "line 1", "line 2"] and kept_logs.end("j1", 1, 1) == 21
    path = kept_logs._path("j1", 1, 1)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_piece_another_refresh_already_added_is_not_added_twice():
    kept_logs.keep("j1", 1, 1, "line 0\nline 1\n", 0, 14)
    kept_logs.keep("j1", 1, 1, "line 1\n", 7, 14)  # read from an older end, before the other's write
    assert copy() == ["line 0", "line 1"]


def test_a_piece_after_a_gap_replaces_the_copy():
    kept_logs.keep("j1", 1, 1, "old\n", 0, 4)
    kept_logs.keep("j1", 1, 1, "new\n", 5000000, 5000004)  # more than KEEP_BYTES written since
    assert copy() == ["new"] and kept_logs.end("j1", 1, 1) == 5000004


def test_the_copy_is_the_last_mib_from_a_line_s_start_and_is_cut_when_it_reaches_two():
    line = "x" * 99 + "\n"
    kept_logs.keep("j1", 1, 1, line * 10000, 0, 1000000)
    kept_logs.keep("j1", 1, 1, "last\n" * 20000, 1000000, 1100000)
    shown = copy()
    assert len(("\n".join(shown) + "\n").encode()) <= kept_logs.KEEP_BYTES
    assert shown[0] == "x" * 99 and shown[-1] == "last" and shown.count("last") == 20000
    path = kept_logs._path("j1", 1, 1)
    assert path.stat().st_size > kept_logs.KEEP_BYTES  # lines are added in place
    end = 1100000
    for _ in range(11):  # 1.1 MB more: the 'last' lines are gone
        kept_logs.keep("j1", 1, 1, line * 1000, end, end + 100000)
        end += 100000
        assert path.stat().st_size <= 2 * kept_logs.KEEP_BYTES + 100
    assert copy()[-1] == "x" * 99 and "last" not in copy() and kept_logs.end("j1", 1, 1) == end


def test_a_copy_nothing_was_added_to_is_marked_current():
    kept_logs.keep("j1", 1, 1, "line 0\n", 0, 7)
    path = kept_logs._path("j1", 1, 1)
    os.utime(path, (1000, 1000))
    kept_logs.keep("j1", 1, 1, "", 7, 7)
    assert copy() == ["line 0"] and kept_logs.read("j1", 1, 1)[1] > time.time() - 60


def test_a_copy_kept_whole_by_an_earlier_tsubmit_is_read_whole():
    path = kept_logs._path("j1", 1, 1)
    path.parent.mkdir(parents=True)
    path.write_text("node 1 says hello\n")
    assert copy() == ["node 1 says hello"] and kept_logs.end("j1", 1, 1) == 0


def rank_status(root: Path, **item) -> dict:
    """rank_status.py run as the status role runs it, tsubmit_procs.py beside it."""
    folder = root / ".script"
    folder.mkdir(exist_ok=True)
    for source in (REPO / "roles/status/files/rank_status.py",
                   REPO / "roles/node_lib/files/tsubmit_procs.py"):
        (folder / source.name).write_text(source.read_text())
    request = json.dumps([{"key": "k", "dir": "job/rank-1/attempt-1", "marker": "job.r1.a1", **item}])
    done = subprocess.run([sys.executable, str(folder / "rank_status.py"), str(root), request],
                          capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    return json.loads(done.stdout)["k"]


def test_a_running_rank_s_node_sends_its_new_complete_lines_only_when_asked(tmp_path):
    attempt = tmp_path / "job" / "rank-1" / "attempt-1"
    attempt.mkdir(parents=True)
    (attempt / "output.log").write_bytes(b"line 0\nline 1\nhalf a li")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        ticks = (Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split())[19]
        (attempt / "pid").write_text(f"{sleeper.pid} {ticks} {int(time.time())}\n")
        report = rank_status(tmp_path, keep=kept_logs.KEEP_BYTES)
        assert report["state"] == "running" and "log_end" not in report  # not watched: nothing
        report = rank_status(tmp_path, keep=kept_logs.KEEP_BYTES, keep_live=True)
        assert (report["log_end"], report["log_from"], report["log_to"]) == ("line 0\nline 1\n", 0, 14)
        report = rank_status(tmp_path, keep=kept_logs.KEEP_BYTES, keep_from=7, keep_live=True)
        assert (report["log_end"], report["log_from"], report["log_to"]) == ("line 1\n", 7, 14)
    finally:
        sleeper.kill()
        sleeper.wait()
    (attempt / "exit_code").write_text(f"1 {time.time()}\n")
    report = rank_status(tmp_path, keep=kept_logs.KEEP_BYTES, keep_from=14)
    assert report["state"] == "failed" and (report["log_end"], report["log_from"]) == ("half a li", 14)
