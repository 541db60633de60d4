"""The node scripts that receive the layout's paths (tsubmit/model/layout.py), run
with the node's real sh on folders of this machine."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tsubmit.model import layout

REPO = Path(__file__).resolve().parents[2]
REMOVE_JOB = REPO / "roles" / "cleanup" / "files" / "remove_job.sh"


def remove_job(job_dir: str, job_id: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(REMOVE_JOB), job_dir, job_id], capture_output=True, text=True,
                          timeout=30, check=False)


def test_remove_job_removes_the_job_s_folder(tmp_path):
    folder = Path(layout.job_dir("3f2a", str(tmp_path)))
    (folder / layout.WORKDIR).mkdir(parents=True)
    done = remove_job(str(folder), "3f2a")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed {folder}\n" and not folder.exists()
    assert remove_job(str(folder), "3f2a").stdout == ""  # nothing left: nothing said


def test_remove_job_refuses_a_folder_that_is_not_the_job_s(tmp_path):
    # A cleanup_job_dir an inventory set wrong must not remove someone's folder.
    other = tmp_path / "data"
    other.mkdir()
    refused = remove_job(str(other), "3f2a")
    assert refused.returncode == 2
    assert f"{other} is not the folder of job 3f2a" in refused.stderr
    assert other.is_dir()
    bad = remove_job(str(tmp_path / "x y"), "x y")
    assert bad.returncode == 2 and "bad job id 'x y'" in bad.stderr



RANK_STATUS = REPO / "roles" / "status" / "files" / "rank_status.py"
RECORDING_WORKER = """
import os
from torch.distributed.elastic.multiprocessing.errors import record

@record
def main():
    print("worker", os.environ["RANK"], "starts", flush=True)
    if os.environ["LOCAL_RANK"] == "1":
        raise ValueError("the loss is NaN")

main()
"""


def test_rank_status_tells_the_worker_that_failed_under_a_real_torchrun(tmp_path):
    # torchrun exits 1; the rank's cause is its worker's: global and local rank from
    # torchrun's summary, the error the worker recorded (@record) from TORCHELASTIC_ERROR_FILE.
    attempt = Path(layout.attempt_dir("3f2a", 0, 1, str(tmp_path)))
    attempt.mkdir(parents=True)
    (tmp_path / "worker.py").write_text(RECORDING_WORKER)
    error_file = {"TORCHELASTIC_ERROR_FILE": str(attempt / layout.TORCHRUN_ERROR)}
    with open(attempt / layout.LOG, "w") as log:
        ran = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node=2",
                              "--no-python", sys.executable, str(tmp_path / "worker.py")],
                             stdout=log, stderr=subprocess.STDOUT, timeout=120,
                             env={**os.environ, **error_file})
    (attempt / layout.EXIT_CODE).write_text(f"{ran.returncode} 1796616459.25\n")
    for script in (RANK_STATUS, REPO / "roles" / "node_lib" / "files" / "tsubmit_procs.py"):
        shutil.copy(script, tmp_path)
    wanted = [{"key": "k", "dir": layout.attempt_dir("3f2a", 0, 1), "marker": "m", "tail": 20}]
    status = subprocess.run([sys.executable, str(tmp_path / RANK_STATUS.name), str(tmp_path),
                             json.dumps(wanted)], capture_output=True, text=True, check=True)
    report = json.loads(status.stdout)["k"]
    assert ran.returncode == 1
    assert (report["state"], report["exit_code"], report["ended"]) == ("failed", 1, 1796616459.25)
    assert report["cause"] == {"worker_rank": 1, "local_rank": 1, "exit_code": 1,
                               "error": "ValueError: the loss is NaN"}
    # The tail is the workers' last lines, not torchrun's traceback and summary.
    assert not any("ChildFailedError" in line or "Root Cause" in line for line in report["tail"])
    assert any("ValueError: the loss is NaN" in line for line in report["tail"]), report


def test_cluster_check_s_listener_outlives_the_hangup_that_ends_its_ssh_session():
    # Ansible runs the script on a terminal; when it returns, the session ends and
    # the terminal's process group is hung up on. On a loaded node the detaching
    # child used to be scheduled only after that, still in the group, and the
    # workers' connection test met "connection refused". A late scheduling is
    # made certain here by a child whose setsid waits half a second.
    listen = REPO / "roles" / "check" / "files" / "listen.py"
    late_child = ("import os, runpy, sys, time\n"
                  "setsid = os.setsid\n"
                  "os.setsid = lambda: (time.sleep(0.5), setsid())[1]\n"
                  "sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    session = subprocess.Popen([sys.executable, "-c", late_child, str(listen), "127.0.0.1", "1", "30"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    port = json.loads(session.stdout.readline())["port"]
    session.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):  # nothing of it left in the group: fine
        os.killpg(session.pid, signal.SIGHUP)
    connect = subprocess.run([sys.executable, str(listen.with_name("connect.py")), "127.0.0.1",
                              str(port), "5"], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(connect.stdout)["status"] == "ok", connect.stdout


def test_sync_probe_finds_a_remote_root_under_the_home_from_any_folder(tmp_path):
    # The controller cannot know the node's $HOME: it hands the root relative to it.
    root = layout.home_relative("~/jobs")
    (tmp_path / "jobs" / "3f2a" / "workdir" / "ckpt").mkdir(parents=True)
    bundle = tmp_path / "bundle"  # as run_script ships it: the script and the node library's file
    bundle.mkdir()
    for script in (REPO / "roles" / "sync_dirs" / "files" / "sync_probe.sh",
                   REPO / "roles" / "node_lib" / "files" / "workdir_check.sh"):
        shutil.copy(script, bundle)
    probe = subprocess.run(["sh", str(bundle / "sync_probe.sh"),
                            root, "3f2a", "token1", "", "ckpt"], capture_output=True, text=True,
                           cwd="/", env={**os.environ, "HOME": str(tmp_path)}, timeout=30, check=True)
    lines = probe.stdout.splitlines()
    assert lines[:2] == [f"root {tmp_path}/jobs", "filesystem token1"]
    assert lines[2].startswith("dir 1 ") and lines[2] != "dir 1 -"
