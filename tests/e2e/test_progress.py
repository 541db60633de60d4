"""On a terminal every verb that reaches nodes shows each node's progress
while its playbook runs (what `run` always did), and removes it once done;
off a terminal they print nothing of it. The terminal is a real pty."""

import re

import pytest

from tests.harness.jobs import distributed, job_processes
from tests.harness.terminal import on_a_terminal

pytestmark = pytest.mark.e2e


def test_every_verb_that_reaches_nodes_shows_per_node_progress_on_a_terminal(cli, nodes, workdir):
    members = nodes.nodes[:2]
    cli.write_cluster("c", nodes, members)
    job_id = distributed(cli, "c", workdir, "python", "sleeper.py")
    colour = {**{k: v for k, v in cli.env.items() if k != "NO_COLOR"}, "TERM": "xterm", "COLUMNS": "200"}
    try:
        for verb in (["cluster", "check", "c"], ["status", job_id], ["list"], ["stop", job_id],
                     ["delete", job_id, "--yes"]):
            code, shown = on_a_terminal(cli, *verb, env=colour, timeout=300)
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
