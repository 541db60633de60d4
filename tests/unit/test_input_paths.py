"""Paths that reach a shell as data (issue 15, item 5): the crontab line of a
schedule and the command that follows a rank's log. Each is run by a real
/bin/sh, as cron and `tsubmit logs -f` run it, with paths holding everything a
shell or a template would evaluate."""

import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from tsubmit.jobs import cron, logs
from tsubmit.nodes import ssh


@pytest.fixture
def marker():
    path = Path("/tmp") / f"tsubmit-paths-pwned-{uuid.uuid4().hex[:12]}"
    yield path
    existed = path.exists()
    path.unlink(missing_ok=True)
    assert not existed, f"{path} was created: a path was evaluated by a shell"


def hostile_folder(parent: Path, marker: Path) -> Path:
    return parent / f"a b $(touch {marker}) `touch {marker}` 'q' \"d\" %d %% {{{{ 7*7 }}}} ;|&"


def short_lived_pid() -> int:
    """The pid of a process that ends in a second and is reaped at once, as a rank's
    process on its node: `tail --pid` stops once it is gone."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    threading.Thread(target=process.wait, daemon=True).start()
    return process.pid


def test_a_cron_line_carries_a_hostile_tsubmit_home_as_data(tmp_path, monkeypatch, marker):
    # No crontab is touched: the line is built and run as cron would run it.
    home = hostile_folder(tmp_path, marker)
    monkeypatch.setenv("TSUBMIT_HOME", str(home))
    line = cron.entry_line("nightly", {"schedule": "0 2 * * *", "environment": {"TSUBMIT_HOME": str(home)}})
    command, stdin = cron.cron_command(line)
    assert stdin is None  # every % escaped: nothing became cron's standard input
    done = subprocess.run(["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    log = home / "state" / "cron" / "nightly.log"
    assert log.exists(), (line, done.stderr)
    assert "unknown schedule 'nightly'" in log.read_text()  # tsubmit ran, under that very home


HERE = ssh.connection("here", {"ansible_connection": "local"})


def test_following_a_log_under_a_hostile_path_reads_that_file(tmp_path, marker):
    folder = hostile_folder(tmp_path, marker)
    folder.mkdir(parents=True)  # the marker's slashes make folders of their own
    (folder / "output.log").write_text("line one\nline {{ 7*7 }} $(x)\n")
    argv = logs.follow_command(HERE, str(folder / "output.log"),
                               short_lived_pid(), None)
    shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "line one\nline {{ 7*7 }} $(x)\n"


def test_following_a_log_under_the_remote_home_keeps_the_tilde_for_the_node(tmp_path, marker):
    top = f"tsubmit-follow-{uuid.uuid4().hex[:8]}"
    target = hostile_folder(Path(os.path.expanduser("~")) / top, marker)
    target.mkdir(parents=True)
    try:
        (target / "output.log").write_text("from the home\n")
        relative = target.relative_to(Path(os.path.expanduser("~")))
        argv = logs.follow_command(HERE, f"~/{relative}/output.log",
                                   short_lived_pid(), None)
        shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert shown.stdout == "from the home\n", shown.stderr
    finally:
        shutil.rmtree(Path(os.path.expanduser("~")) / top)
