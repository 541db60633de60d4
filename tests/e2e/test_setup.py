"""`tsubmit run --setup` on real sshd nodes: a setup that counts its runs (once per
node and inputs, again when requirements.txt changes), one shared by nodes on one
folder and jobs started together, a venv with a locally built wheel that the rank
uses, a setup that fails (exit 3, its last lines, everything rolled back), its log
(`logs --setup`) and `gc` of setup folders.

Each setup appends to a file in the node's remote root, outside the cache, so
the tests count what really ran on each node."""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TSUBMIT
from tests.harness import eventually
from tests.harness.jobs import attempt_dir, job_id_of
from tests.harness.processes import stderr_reader

pytestmark = pytest.mark.e2e

# Appends "start"/"end" lines around a pause, so runs that overlapped would show.
COUNTING = ('echo "start $NODE_RANK $TSUBMIT_JOB_ID" >> "$TSUBMIT_SETUP_DIR/../../setup-runs"; '
            'sleep {pause}; touch "$TSUBMIT_SETUP_DIR/ready"; '
            'echo "end $NODE_RANK" >> "$TSUBMIT_SETUP_DIR/../../setup-runs"')
# The rank fails unless the setup it follows was complete.
USES_SETUP = ["--executor", "distributed", "--", "sh", "-c", 'test -f "$TSUBMIT_SETUP_DIR/ready"']


def runs_on(root: Path) -> list[str]:
    path = root / "setup-runs"
    return path.read_text().splitlines() if path.exists() else []


def setup_dirs(root: Path) -> list[str]:
    folder = root / ".setup"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


@pytest.fixture
def fresh_roots(nodes):
    """The nodes' remote roots without any setup cache or run count left by another test."""
    for node in nodes.nodes:
        shutil.rmtree(node.remote_root / ".setup", ignore_errors=True)
        (node.remote_root / "setup-runs").unlink(missing_ok=True)
    yield [node.remote_root for node in nodes.nodes]


@pytest.fixture
def pair(cli, nodes, fresh_roots):
    cli.write_cluster("pair", nodes, nodes.nodes[:2])
    return cli


def test_a_setup_runs_once_per_node_and_again_when_requirements_change(pair, nodes, tmp_path):
    cli = pair
    (tmp_path / "requirements.txt").write_text("numpy==1.0\n")
    setup = COUNTING.format(pause=0)
    first = cli("run", "-c", "pair", "--wait", "--setup", setup, "--workdir", str(tmp_path), *USES_SETUP)
    assert first.code == 0, first.output
    second = cli("run", "-c", "pair", "--wait", "--setup", setup, "--workdir", str(tmp_path), *USES_SETUP)
    assert second.code == 0, second.output
    for rank, node in enumerate(nodes.nodes[:2]):
        assert runs_on(node.remote_root) == [f"start {rank} {job_id_of(first)}", f"end {rank}"], \
            "the second job with the same inputs skipped the setup"
        log = attempt_dir(node, job_id_of(second), rank) / "setup.log"
        assert "setup skipped: it already succeeded here with the same inputs" in log.read_text()
    key = setup_dirs(nodes.nodes[0].remote_root)
    assert len(key) == 1

    (tmp_path / "requirements.txt").write_text("numpy==2.0\n")
    third = cli("run", "-c", "pair", "--wait", "--setup", setup, "--workdir", str(tmp_path), *USES_SETUP)
    assert third.code == 0, third.output
    for rank, node in enumerate(nodes.nodes[:2]):
        assert runs_on(node.remote_root)[2:] == [f"start {rank} {job_id_of(third)}", f"end {rank}"]
        assert len(setup_dirs(node.remote_root)) == 2, "a new key, a folder of its own"

    # --setup-key names the files the cache follows: requirements.txt no longer counts.
    (tmp_path / "deps.lock").write_text("a\n")
    keyed = ["--setup", setup, "--setup-key", "deps.lock", "--workdir", str(tmp_path)]
    cli.ok("run", "-c", "pair", "--wait", *keyed, *USES_SETUP)
    (tmp_path / "requirements.txt").write_text("numpy==3.0\n")
    cli.ok("run", "-c", "pair", "--wait", *keyed, *USES_SETUP)
    assert len(runs_on(nodes.nodes[0].remote_root)) == 6, "one more run for the new key, then none"


def test_nodes_sharing_a_folder_and_jobs_started_together_run_the_setup_once(cli, nodes, tmp_path):
    """Two nodes on one remote root (an NFS home) and two jobs submitted at the same
    moment: four ranks want the same setup; one runs it, the others wait for it and
    none starts before it is complete."""
    owner = pwd.getpwnam(nodes.nodes[0].user)
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=nodes.nodes[0].remote_root))
    os.chown(shared, owner.pw_uid, owner.pw_gid)
    shared.chmod(0o755)
    cli.write_cluster("shared", nodes, nodes.nodes[:2], tsubmit_remote_root=str(shared))
    (tmp_path / "requirements.txt").write_text("torch\n")
    argv = [*TSUBMIT, "run", "-c", "shared", "--wait", "--setup", COUNTING.format(pause=3),
            "--workdir", str(tmp_path), *USES_SETUP]
    started = [subprocess.Popen(argv, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300)[0] for process in started]
    assert [process.returncode for process in started] == [0, 0], outputs
    runs = runs_on(shared)
    assert len(runs) == 2 and runs[0].startswith("start ") and runs[1].startswith("end "), runs
    logs = [path.read_text() for path in shared.glob("*/rank-*/attempt-1/setup.log")]
    assert len(logs) == 4
    assert sum("running the setup" in log for log in logs) == 1
    assert sum("setup skipped" in log for log in logs) == 3
    assert any("waiting: the same setup runs for another job" in log for log in logs), logs
    for output in outputs:
        cli.ok("delete", "--yes", job_id_of(output))
    shutil.rmtree(shared, ignore_errors=True)


def test_a_setup_makes_a_venv_with_a_local_wheel_and_the_rank_uses_it(cli, nodes, fresh_roots, tmp_path):
    """The wheel is built here, offline, with this venv's pip and setuptools, and
    shipped in the job's tree; the setup installs it with --no-index."""
    package = tmp_path / "probe-src"
    (package / "setup_probe").mkdir(parents=True)
    (package / "setup_probe" / "__init__.py").write_text(
        "import os, sys\nVALUE = 'from the wheel'\n"
        "def main():\n"
        "    print('value:', VALUE)\n    print('python:', sys.executable)\n"
        "    print('path0:', os.environ['PATH'].split(':')[0])\n"
        "    print('dir:', os.environ['TSUBMIT_SETUP_DIR'])\n")
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "setup-probe"\nversion = "1.0"\n'
        '[project.scripts]\nsetup-probe = "setup_probe:main"\n'
        '[tool.setuptools]\npackages = ["setup_probe"]\n')
    work = tmp_path / "work"
    (work / "wheels").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-index", "--no-build-isolation",
                    "--no-deps", "-q", "-w", str(work / "wheels"), str(package)], check=True)
    (work / "requirements.txt").write_text("setup-probe\n")
    (work / "show.py").write_text("from setup_probe import main\nmain()\n")
    cli.write_cluster("one", nodes, nodes.nodes[:1])
    setup = ('python -m venv "$TSUBMIT_SETUP_DIR/venv" && '
             '"$TSUBMIT_SETUP_DIR/venv/bin/pip" install -q --no-index --find-links wheels '
             '-r requirements.txt')
    def check_used(job: str) -> None:
        lines = dict(line.split(": ", 1) for line in cli.ok("logs", job).stdout.splitlines() if ": " in line)
        setup_dir = lines["dir"]
        assert setup_dir.startswith(str(nodes.nodes[0].remote_root / ".setup") + "/")
        assert lines["value"] == "from the wheel"
        assert lines["path0"] == f"{setup_dir}/venv/bin"
        assert lines["python"].startswith(f"{setup_dir}/venv/bin/python")  # python or python3.11

    # The command is the wheel's console script, which only the setup installs:
    # it is not looked for before the setup runs.
    run = cli("run", "-c", "one", "--wait", "--setup", setup, "--workdir", str(work),
              "--executor", "distributed", "--", "setup-probe")
    assert run.code == 0, run.output
    check_used(job_id_of(run))
    # The same setup again is skipped; `python` is the venv's.
    again = job_id_of(cli.ok("run", "-c", "one", "--wait", "--setup", setup, "--workdir", str(work),
                             "--executor", "distributed", "--", "python", "show.py"))
    assert "setup skipped" in cli.ok("logs", again, "--setup").stdout
    check_used(again)
    # A shell on the rank's node has the rank's environment: the venv first.
    shell = cli.ok("shell", again, "--", "sh", "-c", 'command -v python; echo "$TSUBMIT_SETUP_DIR"').stdout
    found, setup_dir = shell.split()
    assert found == f"{setup_dir}/venv/bin/python"


def test_a_failing_setup_fails_the_launch_with_its_last_lines_and_rolls_back(pair, nodes):
    """The setup fails on rank 1 only, after leaving a process behind; rank 0's
    setup succeeded and its rank started. Exit 3 names the host with the setup's
    last lines; nothing runs anywhere, no job folder, no half-made setup folder."""
    cli = pair
    setup = ('if [ "$NODE_RANK" = 1 ]; then (sleep 301 &); '
             'for i in 1 2 3 4 5 6 7; do echo "building step $i"; done; echo "error: no compiler" >&2; '
             'exit 5; fi')
    run = cli("run", "-c", "pair", "--setup", setup, "--executor", "distributed", "--", "sleep", "302")
    assert run.code == 3, run.output
    second = nodes.nodes[1].name
    line = next(line for line in run.stderr.splitlines() if "the setup failed" in line)
    assert line.strip().startswith(f"{second}: the setup failed with exit code 5"), run.stderr
    assert ("building step 4 | building step 5 | building step 6 | building step 7 | "
            "error: no compiler") in line
    assert "building step 2" not in line, "the last lines only"
    job = job_id_of(run)
    for node in nodes.nodes[:2]:
        assert not (node.remote_root / job).exists(), f"the job's folder is left on {node.name}"
        assert nodes.processes_of(node, r"^sleep 30[12]") == [], f"something is left running on {node.name}"
    assert setup_dirs(nodes.nodes[1].remote_root) == [], "the failed setup's folder is removed"
    assert not list((nodes.nodes[1].remote_root / ".setup").glob("*.done"))
    assert cli.job(job)["state"] == "failed"


def test_logs_setup_shows_what_ran_or_that_it_was_skipped(pair, nodes, tmp_path):
    cli = pair
    setup = 'echo "installing for rank $NODE_RANK in $(pwd)"'
    first = cli.ok("run", "-c", "pair", "--wait", "--setup", setup, "--workdir", str(tmp_path),
                   "--executor", "distributed", "--", "true")
    second = cli.ok("run", "-c", "pair", "--wait", "--setup", setup, "--workdir", str(tmp_path),
                    "--executor", "distributed", "--", "true")
    shown = cli.ok("logs", job_id_of(first), "--setup").stdout
    workdir = nodes.nodes[0].remote_root / job_id_of(first) / "workdir"
    assert f"installing for rank 0 in {workdir}" in shown
    assert "[tsubmit] running the setup" in shown and "[tsubmit] setup done" in shown
    every = cli.ok("logs", job_id_of(second), "--setup", "--all").stdout.splitlines()
    for rank, node in enumerate(nodes.nodes[:2]):
        prefix = f"[rank {rank} {node.name}] [tsubmit] setup skipped"
        assert any(line.startswith(prefix) for line in every), every
    assert not any("installing" in line for line in every)
    assert "installing" not in cli.ok("logs", job_id_of(first)).stdout, "the rank's own log is apart"

    plain = cli.ok("run", "-c", "pair", "--wait", "--workdir", str(tmp_path), "--executor", "distributed",
                   "--", "true")
    refused = cli("logs", job_id_of(plain), "--setup")
    assert refused.code == 2 and f"job {job_id_of(plain)} has no setup" in refused.stderr
    refused = cli("logs", job_id_of(first), "--setup", "-f")
    assert refused.code == 2 and "drop -f" in refused.stderr


def test_gc_removes_setup_folders_unused_for_a_time_but_never_one_in_use(cli, nodes, fresh_roots, tmp_path):
    node = nodes.nodes[0]
    cli.write_cluster("one", nodes, [node])

    def run(setup: str, *command: str, wait: bool = True) -> str:
        argv = ["run", "-c", "one", "--setup", COUNTING.format(pause=0) + f"; echo {setup}",
                "--workdir", str(tmp_path), "--executor", "distributed"]
        return job_id_of(cli.ok(*argv, *(["--wait"] if wait else []), "--", *command))

    def key(job: str) -> str:
        return cli.job(job)["extras"]["setup"]["key"]

    old, in_use, recent = run("old", "true"), run("in-use", "sleep", "303", wait=False), None
    cache = node.remote_root / ".setup"
    hours_ago = time.time() - 2 * 3600
    for job in (old, in_use):
        os.utime(cache / f"{key(job)}.used", (hours_ago, hours_ago))
    recent = run("recent", "true")

    dry = cli.ok("gc", "--setups-unused-for", "1h", "--dry-run").stdout
    assert f"setup {node.name}: {key(old)}" in dry and "would remove 1 setup folder(s)" in dry
    assert (cache / key(old)).is_dir(), "a dry run removes nothing"

    done = cli.ok("gc", "--setups-unused-for", "1h").stdout
    assert f"  setup {node.name}: {key(old)}" in done
    assert f"kept setup {node.name}: {key(in_use)} (in use)" in done, done
    assert key(recent) not in done
    assert not (cache / key(old)).exists() and not (cache / f"{key(old)}.done").exists()
    assert (cache / key(in_use)).is_dir() and (cache / f"{key(in_use)}.done").exists()
    assert (cache / key(recent)).is_dir()

    cli.ok("stop", in_use)
    again = cli.ok("gc", "--setups-unused-for", "1h").stdout
    assert f"  setup {node.name}: {key(in_use)}" in again, again
    assert not (cache / key(in_use)).exists()
    runs = len(runs_on(node.remote_root))
    run("old", "true")
    assert len(runs_on(node.remote_root)) == runs + 2, "a removed setup runs again"


def holds_lock(lock: Path) -> bool:
    """Whether some process holds LOCK (flock), as `tsubmit gc` would find it."""
    return subprocess.run(["flock", "-n", "-x", str(lock), "true"]).returncode != 0


def test_with_pre_launch_hooks_the_setup_runs_first_and_the_rank_holds_its_lock(cli, nodes, fresh_roots,
                                                                                 tmp_path):
    """With a pre-launch hook the start is a step of its own (start_staged.sh): the
    setup ran before the hook, and the started rank holds the setup's lock as a
    rank started at once does; the setup string is data (a template stays text)."""
    node = nodes.nodes[0]
    cli.write_cluster("one", nodes, [node])
    hook = tmp_path / "pre.yml"
    hook.write_text(yaml.safe_dump([{
        "name": "Copy what the setup made: it ran before the hook",
        "ansible.builtin.copy": {"src": "{{ launch_setup_dir }}/out", "remote_src": True,
                                 "dest": "{{ launch_job_dir }}/hooked", "mode": "0644"}}]))
    setup = "echo '{{ 7 * 7 }}' > \"$TSUBMIT_SETUP_DIR/out\""
    run = cli.ok("run", "-c", "one", "--setup", setup, "--hook", f"pre_launch_tasks={hook}",
                 "--workdir", str(tmp_path), "--executor", "distributed", "--", "sleep", "304")
    job = job_id_of(run)
    assert (node.remote_root / job / "hooked").read_text() == "{{ 7 * 7 }}\n"
    key = cli.job(job)["extras"]["setup"]["key"]
    setup_dir = node.remote_root / ".setup" / key
    assert (setup_dir / "out").read_text() == "{{ 7 * 7 }}\n"
    assert holds_lock(setup_dir.parent / f"{key}.lock"), "the staged rank holds the setup's lock"

    # A rank started at once holds it too, and a restart takes the cached setup.
    cli.ok("stop", job)
    assert not holds_lock(setup_dir.parent / f"{key}.lock"), "a stopped rank lets go"
    plain = job_id_of(cli.ok("run", "-c", "one", "--setup", setup, "--workdir", str(tmp_path),
                             "--executor", "distributed", "--", "sleep", "305"))
    assert holds_lock(setup_dir.parent / f"{key}.lock")
    cli.ok("stop", plain)
    cli.ok("restart", plain)
    attempt = attempt_dir(node, plain, 0, 2) / "setup.log"
    assert "setup skipped" in attempt.read_text()
    assert holds_lock(setup_dir.parent / f"{key}.lock")
    cli.ok("stop", plain)


def test_ctrl_c_twice_during_a_long_setup_stops_it_and_rolls_back(cli, nodes, fresh_roots, tmp_path):
    """The first signal waits for the launch to end on every node (a setup is part
    of it); the second cancels the play: the setup is stopped with the rest, left
    incomplete (no done mark, its lock free) and the job's folders removed."""
    node = nodes.nodes[0]
    cli.write_cluster("one", nodes, [node])
    started = node.remote_root / "setup-started"
    setup = 'touch "$TSUBMIT_SETUP_DIR/../../setup-started"; sleep 307'
    run = subprocess.Popen([*TSUBMIT, "run", "-c", "one", "--setup", setup, "--workdir", str(tmp_path),
                            "--executor", "distributed", "--", "true"],
                           env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said, reader = stderr_reader(run)

    def setup_started() -> bool:
        assert run.poll() is None, f"run ended before its setup started:\n{''.join(said)}"
        return started.exists()

    eventually(setup_started, timeout=120, message="the setup started")
    run.send_signal(signal.SIGINT)
    eventually(lambda: any("interrupt again to cancel" in line for line in said),
               message="run taking the first interrupt", detail=lambda: said)
    run.send_signal(signal.SIGINT)
    stdout = run.communicate(timeout=120)[0]
    reader.join(timeout=60)
    stderr = "".join(said)
    assert run.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    job = next(job for job in cli.ok("list", "-o", "json").json())
    assert job["state"] == "stopped"
    assert nodes.processes_of(node, r"^sleep 307") == []
    assert not (node.remote_root / job["id"]).exists()
    cache = node.remote_root / ".setup"
    assert not list(cache.glob("*.done"))
    assert not any(holds_lock(lock) for lock in cache.glob("*.lock"))
    started.unlink()
