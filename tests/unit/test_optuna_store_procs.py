"""tsubmit_procs.py (the node_lib role's), the one answer to "does the process we
recorded still run", used by the Optuna store's scripts and rank_status.py:
checked on real processes of this machine, a zombie included."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_LIB = REPO / "roles" / "node_lib" / "files"
sys.path.insert(0, str(NODE_LIB))

import tsubmit_procs  # noqa: E402 - the node-side module, from the role's files

from tests.harness import eventually  # noqa: E402


@pytest.fixture
def sleeper():
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_a_running_process_with_its_start_time_is_ours(sleeper, tmp_path):
    ticks = tsubmit_procs.start_ticks(sleeper.pid)
    assert ticks and ticks.isdigit()
    pid_file = tmp_path / "pid"
    pid_file.write_text(f"{sleeper.pid} {ticks} {int(time.time())}\n")
    record = tsubmit_procs.read_pid(str(pid_file))
    assert record == (sleeper.pid, ticks)
    assert tsubmit_procs.is_ours(record)
    assert tsubmit_procs.group_alive(sleeper.pid)  # its own session: pgid == pid


def test_the_record_written_is_the_record_read(sleeper, tmp_path):
    """pid_record writes the line read_pid and is_ours read (the store's spawn uses it)."""
    pid_file = tmp_path / "pid"
    pid_file.write_text(tsubmit_procs.pid_record(sleeper.pid))
    assert tsubmit_procs.read_pid(str(pid_file)) == (sleeper.pid, tsubmit_procs.start_ticks(sleeper.pid))
    assert tsubmit_procs.is_ours(tsubmit_procs.read_pid(str(pid_file)))
    epoch = int(pid_file.read_text().split()[2])
    assert abs(epoch - time.time()) < 5
    sleeper.kill()
    sleeper.wait()
    assert tsubmit_procs.pid_record(sleeper.pid).split()[:2] == [str(sleeper.pid), "0"]
    assert not tsubmit_procs.is_ours(tsubmit_procs.read_pid(str(pid_file)))


def test_the_same_pid_with_another_start_time_is_not_ours(sleeper):
    """A pid the OS gave to another process is never taken for the recorded one."""
    ticks = tsubmit_procs.start_ticks(sleeper.pid)
    assert not tsubmit_procs.is_ours((sleeper.pid, str(int(ticks) + 1)))


def test_a_zombie_counts_as_dead():
    process = subprocess.Popen(["true"], start_new_session=True)
    ticks = (tsubmit_procs.proc_fields(process.pid) or [None] * 20)[19]
    try:
        eventually(lambda: (tsubmit_procs.proc_fields(process.pid) or ["?"])[0] == "Z", timeout=10,
                   interval=0.02, message=f"{process.pid} a zombie")
        assert Path(f"/proc/{process.pid}").exists(), "the zombie is still in the process table"
        assert tsubmit_procs.start_ticks(process.pid) is None
        assert not tsubmit_procs.is_ours((process.pid, ticks))
        assert not tsubmit_procs.group_alive(process.pid)
    finally:
        process.wait()


def test_a_gone_process_is_dead():
    process = subprocess.Popen(["true"])
    process.wait()
    assert tsubmit_procs.proc_fields(process.pid) is None or not Path(f"/proc/{process.pid}").exists()
    assert tsubmit_procs.start_ticks(process.pid) is None
    assert not tsubmit_procs.is_ours((process.pid, "1"))
    assert not tsubmit_procs.is_ours(None)


def test_a_group_lives_while_a_member_outlives_its_leader(tmp_path):
    """A rank's workers may outlive the shell that started them (the leader)."""
    marker = tmp_path / "child"
    leader = subprocess.Popen(["sh", "-c", f"sleep 60 & echo $! > {marker}; exit 0"], start_new_session=True)
    leader.wait()
    eventually(marker.exists, timeout=10, interval=0.02, message=f"{marker} written")
    child = int(marker.read_text())
    try:
        assert tsubmit_procs.start_ticks(leader.pid) is None
        assert tsubmit_procs.group_alive(leader.pid)
    finally:
        os.kill(child, 9)
    eventually(lambda: not tsubmit_procs.group_alive(leader.pid), timeout=10, interval=0.02,
               message=f"group {leader.pid} gone")


def test_a_command_name_with_spaces_and_parentheses_is_read_right(tmp_path):
    program = tmp_path / "odd ) name ("
    program.symlink_to("/bin/sleep")
    process = subprocess.Popen([str(program), "60"], start_new_session=True)
    try:
        fields = tsubmit_procs.proc_fields(process.pid)
        assert fields[0] in "RS" and fields[2] == str(process.pid)
        assert tsubmit_procs.is_ours((process.pid, tsubmit_procs.start_ticks(process.pid)))
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("content", ["", "garbage", "123", "abc 456 7", None])
def test_a_missing_or_malformed_pid_file_reads_as_none(tmp_path, content):
    path = tmp_path / "pid"
    if content is not None:
        path.write_text(content)
    assert tsubmit_procs.read_pid(str(path)) is None


def rank_status(root: Path, job: str) -> dict:
    """rank_status.py run as the status role runs it: tsubmit_procs.py beside it."""
    folder = root / ".script"
    folder.mkdir(exist_ok=True)
    for source in (REPO / "roles/status/files/rank_status.py", NODE_LIB / "tsubmit_procs.py"):
        (folder / source.name).write_text(source.read_text())
    request = json.dumps([{"key": "k", "dir": f"{job}/rank-0/attempt-1", "marker": f"{job}.r0.a1"}])
    done = subprocess.run([sys.executable, str(folder / "rank_status.py"), str(root), request],
                          capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]})
    return json.loads(done.stdout)["k"]


def test_rank_status_takes_a_zombie_launch_shell_for_ended(tmp_path):
    """A rank whose launch shell is a zombie (killed, not yet collected) without an
    exit code is lost, not running."""
    attempt = tmp_path / "job1" / "rank-0" / "attempt-1"
    attempt.mkdir(parents=True)
    process = subprocess.Popen(["true"], start_new_session=True)
    ticks = tsubmit_procs.proc_fields(process.pid)[19]
    try:
        (attempt / "pid").write_text(f"{process.pid} {ticks} {int(time.time())}\n")
        eventually(lambda: (tsubmit_procs.proc_fields(process.pid) or ["?"])[0] == "Z", timeout=10,
                   interval=0.02, message=f"launch shell {process.pid} a zombie")
        assert rank_status(tmp_path, "job1")["state"] == "lost"
    finally:
        process.wait()


def test_rank_status_takes_a_live_launch_shell_for_running(tmp_path, sleeper):
    attempt = tmp_path / "job2" / "rank-0" / "attempt-1"
    attempt.mkdir(parents=True)
    ticks = tsubmit_procs.start_ticks(sleeper.pid)
    (attempt / "pid").write_text(f"{sleeper.pid} {ticks} {int(time.time())}\n")
    report = rank_status(tmp_path, "job2")
    assert report["state"] == "running" and report["pid"] == sleeper.pid


def test_python_on_the_nodes_reads_proc_stat_in_one_place():
    """Every node-side Python script asks tsubmit_procs.py; the shell ones (stop.sh,
    launch.sh) run no Python by design and read field 22 themselves."""
    readers = [path.relative_to(REPO) for path in (REPO / "roles").rglob("*.py")
               if "/stat" in path.read_text()]
    assert readers == [Path("roles/node_lib/files/tsubmit_procs.py")]


def test_the_status_role_ships_the_helper_beside_rank_status():
    import yaml

    [task] = yaml.safe_load((REPO / "roles/status/tasks/main.yml").read_text())
    [helper] = task["tsubmit.cluster.run_script"]["files"]
    assert helper["name"] == "tsubmit_procs.py"
    assert "/node_lib/files/tsubmit_procs.py" in helper["src"]  # found on the roles path


def test_rank_status_says_how_long_a_running_rank_s_log_has_not_grown(tmp_path, sleeper):
    """The hang's measure (--hang-timeout) is the node's: the log's age by the node's
    own clock, so a controller whose clock is off does not change it."""
    attempt = tmp_path / "job3" / "rank-0" / "attempt-1"
    attempt.mkdir(parents=True)
    ticks = tsubmit_procs.start_ticks(sleeper.pid)
    (attempt / "pid").write_text(f"{sleeper.pid} {ticks} {int(time.time())}\n")
    log = attempt / "output.log"
    log.write_text("step 1\n")
    last_write = time.time() - 120
    os.utime(log, (last_write, last_write))
    report = rank_status(tmp_path, "job3")
    assert report["state"] == "running" and 120 <= report["log_idle"] < 180, report
    (attempt / "exit_code").write_text(f"0 {int(time.time())}\n")
    assert "log_idle" not in rank_status(tmp_path, "job3")  # an ended rank has no hang to tell
