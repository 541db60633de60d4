"""roles/stop/files/stop.sh on real processes of this machine: it finds a rank by
the pid file's start time even when the process's name holds spaces and ")"."""

import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STOP = REPO / "roles" / "stop" / "files" / "stop.sh"


def start_ticks(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def stop_recorded(tmp_path: Path, pid: int, ticks: str) -> tuple[subprocess.CompletedProcess, Path]:
    """stop.sh on rank 0 of job1, whose attempt 1 recorded PID with start time TICKS."""
    attempt = tmp_path / "rank-0" / "attempt-1"
    attempt.mkdir(parents=True)
    (attempt / "pid").write_text(f"{pid} {ticks} {int(time.time())}\n")
    done = subprocess.run(["sh", str(STOP), str(tmp_path / "rank-0"), "job1", "0", "1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done, attempt


def test_a_rank_whose_name_holds_spaces_and_parentheses_is_stopped(tmp_path):
    # A launch shell's name is "sh" on a node, but the recorded group leader may be
    # anything a team's wrapper execs; /proc/PID/stat puts the name in parentheses.
    program = tmp_path / "my trainer) x"
    shutil.copy("/bin/sleep", program)
    rank = subprocess.Popen([str(program), "60"], start_new_session=True)
    try:
        done, attempt = stop_recorded(tmp_path, rank.pid, start_ticks(rank.pid))
        assert f"stopped {attempt}" in done.stdout
        assert rank.wait(timeout=10) is not None
        assert (attempt / "stopped").exists()
    finally:
        rank.kill()
        rank.wait()


def test_a_reused_pid_is_left_alone(tmp_path):
    """The pid file's start time differs: the OS gave the pid to another process."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        done, _ = stop_recorded(tmp_path, other.pid, str(int(start_ticks(other.pid)) + 1))
        assert done.stdout == ""
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
