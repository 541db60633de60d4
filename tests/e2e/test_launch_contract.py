"""The launch contract (plugins/plugin_utils/launch_contract.py), computed once
on the controller: `--dry-run` shows byte for byte what each node receives; a
restart computes it as run does; the job's secrets stay out of runner's
artifacts; a host that still sets a retired role variable is refused, naming
what replaced it."""

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from tests.harness.jobs import attempt_dir, job_id_of

pytestmark = pytest.mark.usefixtures("no_injection")  # tests/conftest.py

RENDER_TASK = "Compute every rank's launch on the controller"


def test_the_rendered_scripts_leave_no_secret_in_runner_artifacts(cli, nodes, workdir):
    # The scripts hold the job's environment: render_launch's result, which
    # carries them to every host, is censored for the callbacks (job_events).
    secret = "hunter2-" + os.urandom(4).hex()
    cli.write_cluster("two", nodes, nodes.nodes[:2])
    check = "import os, sys; sys.exit(not os.environ['SECRET'].startswith('hunter2-'))"
    cli.ok("run", "-c", "two", "--executor", "distributed", "--env", f"SECRET={secret}", "--wait",
           "--", "python", "-c", check, cwd=workdir)  # the rank got it: exit 0
    state = cli.home / "state"
    holding = [str(path) for path in state.rglob("*")
               if path.is_file() and not path.name.startswith("jobs.sqlite")  # the store keeps --env
               and secret.encode() in path.read_bytes()]
    assert holding == []
    events = list(state.glob("runs/*-submit-*/artifacts/*/job_events/*.json"))
    assert any(RENDER_TASK in path.read_text() for path in events)  # the step ran, censored


# What --dry-run shows for what only the launch knows (tsubmit/jobs/preview.py), and
# for the job's variables (masked: they may be secrets).
_PLACEHOLDER = re.compile(r"'([^']*<(?:port|remote root)>[^']*)'|<port>|<remote root>")


def _fill(text: str, port: str, root: str) -> str:
    """TEXT with the dry run's placeholders replaced by what the node got,
    quoted as the renderer quotes the real value."""
    def real(match):
        value = (match.group(1) if match.group(1) is not None else match.group(0))
        value = value.replace("<port>", port).replace("<remote root>", root)
        return shlex.quote(value) if match.group(1) is not None else value
    return _PLACEHOLDER.sub(real, text)


def _command_of(launch_sh: str) -> str:
    """The command launch.sh runs: what command.sh.j2 rendered, inside the
    subshell that sources environment.sh."""
    start = launch_sh.index('        . "$here/environment.sh"\n') + len('        . "$here/environment.sh"\n')
    return launch_sh[start:launch_sh.index("\n    )\n    code=$?", start)]


@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_the_dry_run_shows_byte_for_byte_what_each_node_receives(cli, nodes, workdir, executor):
    members = nodes.nodes[:2]
    cli.write_cluster("two", nodes, members)
    options = ["-c", "two", "--executor", executor, "--gpus", "1", "--name", "same",
               "--env", "A=it's {{ x }}", "--workdir", str(workdir),
               "--", "python", "-c", "print('$(x) {{ y }}')", "a b"]
    dry = cli.ok("run", "--dry-run", "-o", "json", *options).json()
    run = cli.ok("run", "--wait", *options)
    job_id = job_id_of(run)
    dry_id = dry["extravars"]["tsubmit_job_id"]
    for rank, node in enumerate(members):
        attempt = attempt_dir(node, job_id, rank)
        launch_sh = (attempt / "launch.sh").read_text()
        environment_sh = (attempt / "environment.sh").read_text()
        port = re.search(r"^export MASTER_PORT=(\d+)$", environment_sh, re.MULTILINE).group(1)
        shown = dry["ranks"][rank]
        assert shown["host"] == node.name
        command = _fill(shown["command"].replace(dry_id, job_id), port, str(node.remote_root))
        assert command == _command_of(launch_sh)
        environment = _fill(shown["environment"].replace(dry_id, job_id), port, str(node.remote_root))
        environment = environment.replace("export A='<set>'", "export A=" + shlex.quote("it's {{ x }}"))
        assert environment + "\n" == environment_sh


ENDED = {"runner_on_ok", "runner_on_skipped", "runner_on_failed"}


def _render_task_status(run_dir: Path) -> set[str]:
    """How render_launch ended in one submit run, by runner's events."""
    events = [json.loads(path.read_text()) for path in run_dir.glob("artifacts/*/job_events/*.json")]
    return {event["event"] for event in events if event["event"] in ENDED
            and event.get("event_data", {}).get("task") == RENDER_TASK}


def test_a_restart_renders_on_the_controller_as_run_does(cli, nodes, workdir):
    cli.write_cluster("two", nodes, nodes.nodes[:2])
    run = cli.ok("run", "-c", "two", "--executor", "distributed", "--wait", "--workdir", str(workdir), "--",
                 "python", "-c", "import os; print('attempt', os.environ['TSUBMIT_ATTEMPT'])")
    job_id = job_id_of(run)
    cli.ok("restart", job_id)
    assert cli.ok("status", job_id, "-o", "json").json()["attempt"] == 2
    submits = sorted((cli.home / "state" / "runs").glob("*-submit-*"), key=lambda path: path.stat().st_mtime)
    assert len(submits) == 2
    assert [_render_task_status(path) for path in submits] == [{"runner_on_ok"}, {"runner_on_ok"}]
