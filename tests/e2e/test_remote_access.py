"""`tsubmit fetch`, `shell` and `forward` against real sshd nodes: what comes home
(bytes, holes, executable bits), what is refused, what a session on a rank's
node sees, and a forward fetched through for real.

The jobs' files are made by the jobs themselves on the nodes, so what the
tests fetch is what a training run leaves behind."""

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TSUBMIT, Cli, fresh_cli
from tests.harness import eventually
from tests.harness.jobs import job_id_of
from tests.harness.processes import listening
from tests.harness.terminal import on_a_terminal

pytestmark = pytest.mark.e2e

BIG = 200 << 20  # the sparse file: 200 MiB apparent, a few KiB of data
MAKE_OUTPUTS = f"""\
import os, pathlib
rank = os.environ["NODE_RANK"]
pathlib.Path("out/sub").mkdir(parents=True, exist_ok=True)
pathlib.Path(f"out/result-{{rank}}.txt").write_text(f"result of rank {{rank}}\\n")
pathlib.Path("out/sub/tool.sh").write_text("#!/bin/sh\\necho tool\\n")
os.chmod("out/sub/tool.sh", 0o755)
os.symlink("result-" + rank + ".txt", "out/latest")  # stays inside: fetched as a link
pathlib.Path("model.txt").write_text(f"model of rank {{rank}}\\n")
with open("big.bin", "wb") as big:
    big.truncate({BIG})
    big.seek(100 << 20)
    big.write(b"middle of rank " + rank.encode())
os.symlink("../hostfile", "escape")  # the job's folder, outside the workdir
pathlib.Path("leaky").mkdir()
pathlib.Path("leaky/fine.txt").write_text("fine\\n")
os.symlink("/etc", "leaky/etc")
"""
# Each rank serves its own folder on 127.0.0.1 only; rank 1 alone, since the
# test nodes share this machine's network.
SERVE = """\
import http.server, os, pathlib
pathlib.Path("hello.txt").write_text("hello from rank " + os.environ["NODE_RANK"] + "\\n")
if os.environ["NODE_RANK"] == os.environ["SERVE_RANK"]:
    http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(os.environ["PORT"]),
                     bind="127.0.0.1")
else:
    import time
    time.sleep(600)
"""


def workdir_on(node, job: str) -> Path:
    return node.remote_root / job / "workdir"


@pytest.fixture(scope="module")
def outputs(nodes, tmp_path_factory):
    """A finished two-node job whose ranks each left results, a sparse file and links;
    shared by the tests that only read it."""
    with fresh_cli() as cli:
        cli.write_cluster("pair", nodes, nodes.nodes[:2])
        work = tmp_path_factory.mktemp("outputs")
        (work / "make_outputs.py").write_text(MAKE_OUTPUTS)
        run = cli("run", "-c", "pair", "--executor", "distributed", "--wait", "--name", "outputs",
                  "--env", "QUOTED=it's {{ x }} $HOME `id`", "--workdir", str(work), "--", "python",
                  "make_outputs.py")
        assert run.code == 0, run.output
        yield cli, job_id_of(run)
        cli("delete", "--yes", job_id_of(run))


# --------------------------------------------------------------------------- fetch


def test_fetch_a_file_and_a_folder_from_rank_0(outputs, nodes, tmp_path):
    cli, job = outputs
    dest = tmp_path / "home"
    result = cli.ok("fetch", job, "model.txt", "out", "--dest", str(dest))
    assert (dest / "model.txt").read_text() == "model of rank 0\n"
    assert (dest / "out" / "result-0.txt").read_text() == "result of rank 0\n"
    assert not (dest / "out" / "result-1.txt").exists()
    tool = dest / "out" / "sub" / "tool.sh"
    assert os.stat(tool).st_mode & 0o777 == 0o755, "the executable bit is kept"
    assert subprocess.run([str(tool)], capture_output=True, text=True).stdout == "tool\n"
    assert os.readlink(dest / "out" / "latest") == "result-0.txt"
    assert f"-> {dest}" in result.stdout and "rank 0 (node1)" in result.stdout
    assert not list(dest.glob(".tsubmit-fetch-*")), "the scratch folder is removed"
    # Nothing on the node changed.
    assert (workdir_on(nodes.nodes[0], job) / "model.txt").read_text() == "model of rank 0\n"


def test_fetch_all_ranks_each_into_its_folder(outputs, tmp_path):
    cli, job = outputs
    cli.ok("fetch", job, "out", "--all", "--dest", str(tmp_path))
    for rank in (0, 1):
        assert (tmp_path / f"rank-{rank}" / "out" / f"result-{rank}.txt").read_text() == \
            f"result of rank {rank}\n"
        assert not (tmp_path / f"rank-{rank}" / "out" / f"result-{1 - rank}.txt").exists()
    cli.ok("fetch", job, "model.txt", "--rank", "1", "--dest", str(tmp_path / "one"))
    assert (tmp_path / "one" / "model.txt").read_text() == "model of rank 1\n"


def test_a_200_mb_sparse_file_comes_home_sparse(outputs, nodes, tmp_path):
    cli, job = outputs
    on_node = workdir_on(nodes.nodes[0], job) / "big.bin"
    assert os.stat(on_node).st_blocks * 512 < 1 << 20, "the job made a sparse file"
    cli.ok("fetch", job, "big.bin", "--dest", str(tmp_path))
    fetched = tmp_path / "big.bin"
    assert fetched.stat().st_size == BIG
    assert fetched.stat().st_blocks * 512 < 1 << 20, "the holes stayed holes"
    with fetched.open("rb") as handle:
        assert handle.read(4096) == bytes(4096)
        handle.seek(100 << 20)
        assert handle.read(16) == b"middle of rank 0"


@pytest.mark.parametrize(("path", "named"), [
    ("/etc/passwd", "is absolute"),
    ("~/.ssh/authorized_keys", "is absolute"),
    ("../hostfile", "goes through .."),
    ("out/../../hostfile", "goes through .."),
    ("escape", "escape leaves the workdir"),  # a symbolic link to ../hostfile, checked on the node
    ("leaky", "leaky/etc points to /etc"),  # a folder holding a link that points out
])
def test_a_path_leaving_the_workdir_is_refused(outputs, tmp_path, path, named):
    cli, job = outputs
    dest = tmp_path / "home"
    result = cli("fetch", job, "model.txt", path, "--dest", str(dest))
    assert result.code == 2, result.output
    assert named in result.stderr and "Traceback" not in result.output
    assert not dest.exists() or not any(dest.iterdir()), "nothing was written"


def test_a_missing_path_is_named(outputs, tmp_path):
    cli, job = outputs
    result = cli("fetch", job, "nope.txt", "--dest", str(tmp_path))
    assert result.code == 2, result.output
    assert "nope.txt does not exist" in result.stderr and "node1" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_not_overwritten_without_overwrite(outputs, tmp_path):
    cli, job = outputs
    mine = tmp_path / "out" / "result-0.txt"
    mine.parent.mkdir()
    mine.write_text("my own edits\n")
    for args in (["out"], ["out/result-0.txt"]):  # found inside a folder, and named itself
        result = cli("fetch", job, *args, "--dest", str(tmp_path))
        assert result.code == 2, result.output
        assert f"{mine} exists; add --overwrite" in result.stderr
        assert mine.read_text() == "my own edits\n"
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "result-0.txt"], \
            "nothing else was written either"
    cli.ok("fetch", job, "out", "--dest", str(tmp_path), "--overwrite")
    assert mine.read_text() == "result of rank 0\n"


def test_a_dest_that_is_a_file_is_refused(outputs, tmp_path):
    cli, job = outputs
    (tmp_path / "file").write_text("mine\n")
    result = cli("fetch", job, "model.txt", "--dest", str(tmp_path / "file"))
    assert result.code == 2, result.output
    assert f"--dest {tmp_path / 'file'} exists and is not a folder" in result.stderr
    assert (tmp_path / "file").read_text() == "mine\n"


# --------------------------------------------------------------------------- shell


def test_shell_runs_a_command_in_the_rank_workdir_with_its_environment(outputs, nodes):
    cli, job = outputs
    script = 'pwd; echo "rank=$NODE_RANK world=$WORLD_SIZE"; printf "%s\\n" "$QUOTED"; exit 7'
    result = cli("shell", job, "--rank", "1", "--", "sh", "-c", script)
    assert result.code == 7, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(workdir_on(nodes.nodes[1], job).resolve())
    assert lines[1] == "rank=1 world=2"
    assert lines[2] == "it's {{ x }} $HOME `id`", "the job's values arrive as typed"
    # The words of the command are data: nothing of them is parsed by a shell.
    echo = cli("shell", job, "--", "echo", "$NODE_RANK", "; id", "{{ x }}")
    assert echo.code == 0 and echo.stdout == "$NODE_RANK ; id {{ x }}\n", echo.output


def test_shell_and_fetch_reuse_the_connection_ansible_opened(outputs, nodes):
    """The run left Ansible's control masters (ControlPersist); a shell and a fetch go
    through the same sockets instead of opening connections of their own."""
    cli, job = outputs
    sockets = cli.home / "state" / "cp"
    before = sorted(path.name for path in sockets.iterdir() if path.is_socket())
    assert before, "Ansible left its control sockets"
    cli.ok("shell", job, "--rank", "1", "--", "true")
    cli.ok("fetch", job, "model.txt", "--all", "--dest", str(cli.home / "fetched"))
    assert sorted(path.name for path in sockets.iterdir() if path.is_socket()) == before


def test_shell_without_a_command_is_an_interactive_shell_on_a_terminal(outputs):
    cli, job = outputs
    code, shown = on_a_terminal(cli, "shell", job, "--rank", "1",
                                typed=b'echo "rank=$NODE_RANK"; [ -t 0 ] && echo "on a tty"; exit 3\n')
    assert code == 3, shown
    assert "rank=1" in shown and "on a tty" in shown, shown


def test_fetch_shows_progress_on_a_terminal_only(outputs, tmp_path):
    cli, job = outputs
    code, shown = on_a_terminal(cli, "fetch", job, "big.bin", "--dest", str(tmp_path / "tty"))
    assert code == 0, shown
    assert re.search(r"\rfetching [\d.]+ [KMG]?B at .*rank 0", shown), shown
    piped = cli.ok("fetch", job, "big.bin", "--dest", str(tmp_path / "piped"))
    assert "fetching" not in piped.output and "\r" not in piped.output


# --------------------------------------------------------------------------- forward


def _forwarding(process, timeout=60):
    """The URL tsubmit forward prints once it forwards, and its local port."""
    def printed_url():
        ready, _, _ = select.select([process.stdout], [], [], 0)
        line = process.stdout.readline() if ready else None
        assert line != "", f"tsubmit forward ended without a URL: {process.communicate()}"
        match = re.search(r"forwarding (http://127\.0\.0\.1:(\d+)/)", line or "")
        return match and (match.group(1), int(match.group(2)))

    def output():
        process.kill()
        return process.communicate()

    return eventually(printed_url, timeout=timeout, message="tsubmit forward printing its URL", detail=output)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def serving(cli, nodes, tmp_path):
    """A running two-node job whose rank 1 serves its workdir on 127.0.0.1:PORT."""
    port = _free_port()
    cli.write_cluster("pair", nodes, nodes.nodes[:2])
    (tmp_path / "serve.py").write_text(SERVE)
    run = cli("run", "-c", "pair", "--executor", "distributed", "--env", f"PORT={port}",
              "--env", "SERVE_RANK=1", "--workdir", str(tmp_path), "--", "python", "serve.py")
    assert run.code == 0, run.output
    job = job_id_of(run)
    eventually(lambda: listening("127.0.0.1", port), message=f"rank 1's server listening on {port}")
    yield job, port
    cli("stop", job, "--grace", "1")


def test_forward_to_a_rank_http_server(cli, serving):
    job, port = serving
    process = subprocess.Popen([*TSUBMIT, "forward", job, str(port), "--rank", "1"], env=cli.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, local = _forwarding(process)
        assert local != port, "the server holds PORT on this machine, so a free port is chosen"
        with urllib.request.urlopen(url + "hello.txt", timeout=30) as answer:
            assert answer.read().decode() == "hello from rank 1\n"
        tunnel = f"127.0.0.1:{local}:127.0.0.1:{port}"
        assert _processes_with(tunnel), "an ssh carries the forward"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read()
        eventually(lambda: not _processes_with(tunnel), timeout=10, interval=0.1,
                   message="the ssh of the forward ended with tsubmit forward")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_forward_names_a_taken_port_and_a_port_nothing_listens_on(cli, nodes, serving, tmp_path):
    job, port = serving
    # The server itself holds 127.0.0.1:PORT here (the nodes share this machine).
    taken = cli("forward", job, str(port), "--rank", "1", "--local-port", str(port), timeout=60)
    assert taken.code == 2, taken.output
    assert f"local port {port} is already in use" in taken.stderr
    # A running job's files come home too.
    cli.ok("fetch", job, "hello.txt", "--rank", "1", "--dest", str(tmp_path / "home"))
    assert (tmp_path / "home" / "hello.txt").read_text() == "hello from rank 1\n"
    silent = _free_port()
    nothing = cli("forward", job, str(silent), "--rank", "1", timeout=60)
    assert nothing.code == 2, nothing.output
    assert f"nothing listens on port {silent} on node2 (rank 1 of job {job})" in nothing.stderr
    # A server bound to the node's own address is not reached by a forward to 127.0.0.1.
    with socket.socket() as elsewhere:
        elsewhere.bind((nodes.nodes[1].address, 0))
        elsewhere.listen()
        other = elsewhere.getsockname()[1]
        result = cli("forward", job, str(other), "--rank", "1", timeout=60)
    assert result.code == 2, result.output
    assert f"listens on {nodes.nodes[1].address} only" in result.stderr


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("args", [
    ["fetch", "nosuchjob", "model.txt"],
    ["shell", "nosuchjob", "--", "true"],
    ["forward", "nosuchjob", "8000"],
])
def test_an_unknown_job_is_named(cli, args):
    result = cli(*args)
    assert result.code == 2, result.output
    assert "no job matches 'nosuchjob'" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(("args", "named"), [
    (["fetch", "{job}", "model.txt", "--rank", "2"], "--rank 2 is out of range: job {job} has ranks 0 to 1"),
    (["fetch", "{job}", "model.txt", "--rank", "-1"], "--rank -1 is out of range"),
    (["fetch", "{job}", "model.txt", "--rank", "1", "--all"], "give --rank R or --all, not both"),
    (["fetch", "{job}"], "Missing argument 'PATH...'"),
    (["shell", "{job}", "--rank", "5", "--", "true"], "--rank 5 is out of range"),
    (["forward", "{job}", "8000", "--rank", "2"], "--rank 2 is out of range"),
    (["forward", "{job}", "0"], "PORT must be a TCP port between 1 and 65535"),
    (["forward", "{job}", "70000"], "PORT must be a TCP port between 1 and 65535"),
    (["forward", "{job}", "8000", "--local-port", "99999"], "--local-port must be a TCP port"),
])
def test_bad_ranks_and_ports_are_named(outputs, args, named):
    cli, job = outputs
    result = cli(*[arg.format(job=job) for arg in args])
    assert result.code == 2, result.output
    assert named.format(job=job) in result.stderr and "Traceback" not in result.output


def test_an_unreachable_node_fails_naming_it(outputs, nodes, tmp_path):
    """A node whose sshd is gone is named, exit 3. (The job keeps the connection details it
    was launched with, so the node is made unreachable, not its cluster file edited.)"""
    cli, job = outputs
    node2 = nodes.nodes[1]
    nodes.stop_node(node2)
    try:
        for args in (["shell", job, "--rank", "1", "--", "true"],
                     ["fetch", job, "model.txt", "--all", "--dest", str(tmp_path / "all")],
                     ["forward", job, "8000", "--rank", "1"]):
            result = cli(*args, timeout=120)
            assert result.code == 3, result.output
            assert "cannot reach node2 (rank 1 of job" in result.stderr, result.output
            assert "node2:" in result.stderr and "Connection refused" in result.stderr
        assert not (tmp_path / "all").exists() or not any((tmp_path / "all").iterdir()), \
            "rank 0's files are not written when rank 1's stream failed"
    finally:
        nodes.start_node(node2)


# --------------------------------------------------------------------------- through a bastion


def test_fetch_and_shell_through_a_bastion_with_a_vaulted_inventory(cli, ops_inventory, tmp_path):
    ops = ops_inventory
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "make_outputs.py").write_text(MAKE_OUTPUTS)
    run = cli("run", "-i", str(ops.path), "-g", ops.group, "--vault-password-file",
              str(ops.vault_password_file), "--executor", "distributed", "--wait",
              "--workdir", str(tmp_path / "work"), "--", "python", "make_outputs.py")
    assert run.code == 0, run.output
    job = job_id_of(run)
    head = ops.rank_order()[0]
    result = cli("shell", job, "--", "sh", "-c", 'echo "$NODE_RANK $SITE_TOKEN"; pwd')
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == [f"0 {ops.secrets['site_token']}",
                                          str(workdir_on(head, job).resolve())]
    cli.ok("fetch", job, "out", "--all", "--dest", str(tmp_path / "home"))
    for rank in range(3):
        assert (tmp_path / "home" / f"rank-{rank}" / "out" / f"result-{rank}.txt").is_file()
    cli("delete", "--yes", job)


# --------------------------------------------------------------------------- the local cluster


def test_fetch_shell_and_forward_on_the_local_cluster_need_no_ssh(cli, tmp_path):
    """A host with ansible_connection=local is this machine: the same verbs, no ssh."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "make_outputs.py").write_text(MAKE_OUTPUTS)
    run = cli("run", "--executor", "distributed", "--wait", "--workdir", str(tmp_path / "work"), "--",
              "python", "make_outputs.py")
    assert run.code == 0, run.output
    job = job_id_of(run)
    try:
        result = cli("shell", job, "--", "sh", "-c", 'echo "$NODE_RANK $TSUBMIT_JOB_ID"; exit 4')
        assert result.code == 4 and result.stdout == f"0 {job}\n", result.output
        cli.ok("fetch", job, "out", "big.bin", "--dest", str(tmp_path / "home"))
        assert (tmp_path / "home" / "out" / "result-0.txt").read_text() == "result of rank 0\n"
        assert (tmp_path / "home" / "big.bin").stat().st_blocks * 512 < 1 << 20
        with socket.socket() as server:  # a server of the rank's, on this machine
            server.bind(("127.0.0.1", 0))
            server.listen()
            port = server.getsockname()[1]
            refused = cli("forward", job, str(port), "--local-port", str(_free_port()))
            assert refused.code == 2, refused.output
            assert f"its port {port} is reachable as it is; leave out --local-port" in refused.stderr
    finally:
        cli("delete", "--yes", job)


def test_a_home_whose_path_holds_ssh_tokens_reaches_the_nodes(nodes, tmp_path):
    """ssh expands %h and %% in a ControlPath: a TSUBMIT_HOME holding them
    broke every ssh command (issue 26, item 19); the sockets then live under /tmp."""
    home = Path(tempfile.mkdtemp(prefix="tsh-%h%%-", dir="/tmp"))
    try:
        cli = Cli(home)
        cli.write_cluster("pair", nodes, nodes.nodes[:2])
        run = cli("run", "-c", "pair", "--executor", "distributed", "--wait", "--workdir", str(tmp_path),
                  "--", "python", "-c", "print('reached')")
        assert run.code == 0, run.output
        job = job_id_of(run)
        assert cli.ok("shell", job, "--rank", "1", "--", "echo", "shell reached").stdout == "shell reached\n"
        cli.ok("delete", "--yes", job)
    finally:
        shutil.rmtree(home, ignore_errors=True)
