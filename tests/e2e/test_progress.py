"""On a terminal every verb that reaches nodes shows each node's progress
while its playbook runs (what `run` always did), and removes it once done;
off a terminal they print nothing of it. The terminal is a real pty."""

import os
import pty
import re
import select
import subprocess
import time

import pytest

from tests.conftest import REPO, TSUBMIT
from tests.e2e.test_faults import distributed, job_processes

pytestmark = pytest.mark.e2e


def on_a_terminal(cli, *args: str, timeout: float = 300) -> tuple[int, str]:
    """Run tsubmit with a pty as its terminal: (exit code, what the terminal showed)."""
    env = {**{k: v for k, v in cli.env.items() if k != "NO_COLOR"}, "TERM": "xterm", "COLUMNS": "200"}
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*TSUBMIT, *args], env=env, cwd=REPO, stdin=terminal, stdout=terminal,
                               stderr=terminal)
    os.close(terminal)
    shown = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if not ready:
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: tsubmit, the terminal's last user, has ended
                break
            if not data:
                break
            shown.append(data)
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return process.returncode, b"".join(shown).decode(errors="replace")


def test_every_verb_that_reaches_nodes_shows_per_node_progress_on_a_terminal(cli, nodes, workdir):
    members = nodes.nodes[:2]
    cli.write_cluster("c", nodes, members)
    job_id = distributed(cli, "c", workdir, "python", "sleeper.py")
    try:
        for verb in (["cluster", "check", "c"], ["status", job_id], ["list"], ["stop", job_id],
                     ["delete", job_id, "--yes"]):
            code, shown = on_a_terminal(cli, *verb)
            assert code == 0, shown
            for node in members:  # a line per node, redrawn in place: "  node1  <task>"
                assert re.search(rf"\x1b\[2K  {node.name}  \S", shown), (verb, shown)
            assert "\x1b[0J" in shown, (verb, shown)  # and erased before the answer
    finally:
        cli("delete", "--all", "--yes", "--force")
    assert job_processes(job_id) == []
    cli.write_cluster("c", nodes, members)
    quiet = cli.ok("cluster", "check", "c")
    assert quiet.stderr == ""
