"""The node scripts that receive the layout's paths (tsubmit/layout.py), run
with the node's real sh on folders of this machine."""

import subprocess
from pathlib import Path

from tsubmit import layout

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
