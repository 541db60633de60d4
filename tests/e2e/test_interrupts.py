"""Ctrl-C and SIGTERM are one interrupt: exit 130 with a line that says what
became of the work, whenever the signal comes (while tsubmit's modules load,
while it packs, while `run --wait` or `--queue` waits), never death by the
signal, and a file written to while it is packed is named, not a traceback."""

import fcntl
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import TSUBMIT
from tests.harness import eventually
from tests.harness.gpus import gpu_cluster, hold_gpus, interrupted_while_queued
from tests.harness.processes import catches, stderr_reader

pytestmark = pytest.mark.e2e

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named by Python from 3.10 on Linux only
SIGNALS = [signal.SIGINT, signal.SIGTERM]


def writing_to_a_full_pipe(pid: int) -> bool:
    return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()


def finish(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.parametrize("number", SIGNALS, ids=lambda number: signal.Signals(number).name)
def test_a_signal_while_tsubmit_loads_exits_130_with_a_word(cli, number):
    """Python's -X importtime writes a line to stderr each time an import ends,
    into a one-page pipe this test drains a little at a time: tsubmit stops at
    an import whenever the pipe is full. Once it handles SIGTERM (its own first
    line ran), the signal comes while it is held there, in the middle of
    loading its modules (a second or more on a loaded machine)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, F_SETPIPE_SZ, 4096)
    process = subprocess.Popen([*TSUBMIT, "list"], env={**cli.env, "PYTHONPROFILEIMPORTTIME": "1"},
                               stdout=subprocess.PIPE, stderr=write_end)
    os.close(write_end)
    read: list[bytes] = []

    def held_at_an_import_handling_sigterm() -> bool:
        assert process.poll() is None, "tsubmit loaded without handling SIGTERM"
        if not writing_to_a_full_pipe(process.pid):
            return False
        if catches(process.pid, signal.SIGTERM):
            return True
        read.append(os.read(read_end, 256))  # let it load a few modules more
        return False

    try:
        eventually(held_at_an_import_handling_sigterm, interval=0.005, timeout=120,
                   message="tsubmit held at an import, handling SIGTERM")
        process.send_signal(number)
        drainer = threading.Thread(target=lambda: read.extend(iter(lambda: os.read(read_end, 65536), b"")))
        drainer.start()
        process.wait(timeout=60)
        drainer.join(timeout=60)
    finally:
        finish(process)
        os.close(read_end)
    text = b"".join(read).decode()
    assert process.returncode == EXIT_INTERRUPTED, text[-2000:]
    assert text.rstrip().endswith("tsubmit: interrupted"), text[-2000:]
    assert "Traceback" not in text


def test_ctrl_c_while_packing_stops_at_once_and_caches_nothing(cli, tmp_path):
    """A tree with a 1 TiB sparse file takes minutes to read: the signal comes
    while tsubmit has it open and must end the packing there, leaving no
    archive (whole or partial) and no job."""
    tree = tmp_path / "big"
    tree.mkdir()
    (tree / "train.py").write_text("print('never')\n")
    huge = tree / "data.bin"
    with open(huge, "wb") as f:
        f.truncate(1 << 40)
    process = subprocess.Popen([*TSUBMIT, "run", "--workdir", str(tree), "--", "python", "train.py"],
                               env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def reading_it() -> bool:
            fds = Path(f"/proc/{process.pid}/fd")
            return any(os.readlink(fd) == str(huge) for fd in fds.iterdir() if fd.is_symlink())

        eventually(reading_it, timeout=120, message=f"tsubmit reading {huge}")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        finish(process)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert f"interrupted while packing {tree}; nothing was recorded or started" in stderr
    assert "Traceback" not in stderr
    assert list((cli.home / "state" / "archives").iterdir()) == []
    assert cli.ok("list", "-o", "json").json() == []


def test_a_file_written_while_packing_is_named_and_exits_2(cli, tmp_path):
    """A log the user's other program appends to: read once for the digest,
    then again, longer, for the archive. Many files before it in the tree make
    sure it grows in between."""
    tree = tmp_path / "busy"
    tree.mkdir()
    for number in range(2000):
        (tree / f"part{number:04}.txt").write_text(f"{number}\n" * 50)
    growing = tree / "zz-growing.log"
    growing.write_text("")
    stop = threading.Event()

    def append() -> None:
        with open(growing, "a") as log:
            while not stop.wait(0.001):
                log.write("line\n")
                log.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        result = cli("run", "--workdir", str(tree), "--", "python", "-c", "print('never')")
    finally:
        stop.set()
        writer.join()
    assert result.code == EXIT_USAGE, result.output
    assert (f"cannot archive {tree}: {growing} changed while it was packed; pack again once nothing "
            "writes to it, or add it to .tsubmitignore") in result.stderr
    assert "Traceback" not in result.stderr
    assert [path.name for path in (cli.home / "state" / "archives").iterdir()] == []
    assert cli.ok("list", "-o", "json").json() == []


def test_sigterm_while_run_waits_exits_130_and_the_job_goes_on(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    process = subprocess.Popen([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--wait",
                                "--workdir", str(workdir), "--", "python", "sleeper.py"],
                               env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, reader = stderr_reader(process)
        # The wait asks the nodes with the status playbook: launched and recorded by then.
        eventually(lambda: cli.status_runs() > 0, timeout=120, message="run --wait's first status run",
                   detail=lambda: lines)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=60)
    finally:
        finish(process)
        jobs = cli.ok("list", "-o", "json").json()
        for job in jobs:
            cli.ok("stop", job["id"])
    err = "".join(lines)
    assert process.returncode == EXIT_INTERRUPTED, err
    [job] = jobs
    assert f"stopped waiting; job {job['id']} goes on (tsubmit stop {job['id']})" in err
    assert job["state"] == "running"


def test_sigterm_while_queued_exits_130_and_leaves_nothing(cli, nodes, workdir):
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli)
    holder = hold_gpus(cli, "c", "--workdir", str(workdir))
    try:
        code, err = interrupted_while_queued(cli, "c", signal.SIGTERM, "--name", "queued", "--workdir",
                                             str(workdir), "--", "python", "-c", "print('never')")
        assert code == EXIT_INTERRUPTED, err
        assert "interrupted while queued for GPUs; nothing was started or recorded" in err
        assert [job["id"] for job in cli.ok("list", "-o", "json").json()] == [holder]
    finally:
        cli.ok("stop", holder)
