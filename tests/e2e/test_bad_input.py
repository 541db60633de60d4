"""Every bad input a user can give: exit 2, one line naming the problem, no
traceback, and nothing recorded or left half-done. None needs the sshd nodes."""


import pytest
import yaml

from tests.conftest import Result, fresh_cli

EXIT_USAGE = 2


def assert_usage_error(result: Result, keyword: str) -> str:
    """The failure is exit 2 with one `tsubmit:`/`Error:` line on stderr naming the problem."""
    assert result.code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output
    messages = [line for line in result.stderr.splitlines() if line.startswith(("tsubmit:", "Error:"))]
    assert len(messages) == 1, result.stderr
    [message] = messages
    assert keyword.lower() in message.lower(), result.stderr
    if message.startswith("tsubmit:"):
        # Our own errors print exactly one line; click's add a usage hint around theirs.
        assert result.stderr.strip() == message, result.stderr
    return message


def assert_nothing_recorded(cli, known_ids: tuple[str, ...] = ()) -> None:
    archives = cli.home / "state" / "archives"
    left = list(archives.iterdir()) if archives.exists() else []
    assert len(left) <= len(known_ids), f"a failed run left an archive: {left}"
    assert [job["id"] for job in cli.ok("list", "--all", "-o", "json").json()] == list(known_ids)


def cluster_files(cli) -> list[str]:
    directory = cli.home / "config" / "clusters"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture(scope="module")
def with_job(tmp_path_factory):
    """A Cli whose home holds one finished job on the local cluster, shared by the
    tests below (each only fails against it, so none changes it)."""
    with fresh_cli() as cli:
        workdir = tmp_path_factory.mktemp("work")
        (workdir / "noop.py").write_text("")
        run = cli("run", "--executor", "distributed", "--name", "recorded", "--wait", "--workdir",
                  str(workdir), "--", "python", "noop.py")
        assert run.code == 0, run.output
        job_id = cli.job("recorded")["id"]
        yield cli, job_id
        cli("delete", "--yes", job_id)  # also removes its directory on the node (this machine)


# --- tsubmit run ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "keyword"),
    [
        (["-c", "nope"], "unknown cluster 'nope'"),
        (["-c", "../etc/passwd"], "invalid cluster name"),
        (["--workdir", "/nonexistent/project"], "working directory /nonexistent/project"),
        (["--gpus", "-1"], "--gpus"),
        (["--queue-timeout", "5m"], "--queue-timeout goes with --queue"),
        (["--queue", "--queue-timeout", "soon"], "invalid duration 'soon'"),
        (["--gpus", "two"], "--gpus"),
        (["--max-restarts", "-1"], "--max-restarts"),
        (["--node-timeout", "0"], "--node-timeout must be more than 0 seconds, got '0'"),
        (["--node-timeout", "abc"], "--node-timeout: invalid duration 'abc'"),
        (["--min-nodes", "0"], "--min-nodes must be 1 or more, got 0"),
        (["--min-nodes", "two"], "--min-nodes"),
        # The local cluster is one node.
        (["--min-nodes", "2"], "--min-nodes 2 is more than the job's 1 node (localhost)"),
        (["--env", "NOEQUALS"], "malformed --env 'NOEQUALS'"),
        (["--env", "1X=a"], "invalid variable name '1X'"),
        (["--env", "A-B=a"], "invalid variable name 'A-B'"),
        # tsubmit's own: the rank's leased GPUs, the marker stop finds its processes by
        (["--gpus", "1", "--env", "CUDA_VISIBLE_DEVICES=0,1,2,3"],
         "may not set CUDA_VISIBLE_DEVICES: tsubmit sets it to the GPUs each rank leased"),
        (["--env", "CUDA_VISIBLE_DEVICES=0"], "may not set CUDA_VISIBLE_DEVICES"),
        (["--env", "TSUBMIT_RANK_MARKER=x"], "may not set TSUBMIT_RANK_MARKER"),
        (["--env", "TSUBMIT_JOB_ID=x"], "may not set TSUBMIT_JOB_ID"),
        (["--timeout", "abc"], "invalid duration 'abc'"),
        (["--timeout", "-5m"], "invalid duration"),
        (["--hang-timeout", "abc"], "--hang-timeout: invalid duration 'abc'"),
        (["--hang-timeout", "0"], "--hang-timeout must be more than 0 seconds"),
        (["--executor", "bogus"],
         "'bogus' is not one of 'torchrun', 'distributed', 'docker', 'optuna'"),
        (["--name", "two\nlines"], "invalid job name"),
        (["--env-file", "/nonexistent/env"], "cannot read env file /nonexistent/env"),
        (["-o", "yaml"], "--output"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_run_rejects_bad_options(cli, workdir, args, keyword):
    result = cli("run", "--workdir", str(workdir), *args, "--", "python", "-c", "pass")
    assert_usage_error(result, keyword)
    assert_nothing_recorded(cli)


@pytest.mark.parametrize(
    ("command", "launcher"),
    [
        (["torchrun", "--nproc-per-node", "2", "train.py"], "torchrun"),
        (["/opt/venv/bin/torchrun", "train.py"], "/opt/venv/bin/torchrun"),
        (["python", "-m", "torch.distributed.run", "train.py"], "python -m torch.distributed.run"),
        (["python3", "-u", "-mtorch.distributed.launch", "train.py"], "python3 -m torch.distributed.launch"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_run_refuses_a_torch_launcher_under_the_torchrun_executor(cli, workdir, tmp_path, command,
                                                                    launcher):
    """torchrun in torchrun would run one separate training per worker (issue 26, item 15)."""
    for args in ([], ["--executor", "torchrun"]):
        message = assert_usage_error(cli("run", "--workdir", str(workdir), *args, "--", *command),
                                     "--executor distributed")
        assert f"starts {launcher} itself" in message
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"command": command, "workdir": str(workdir)}))
    assert_usage_error(cli("run", "-f", str(spec)), "--executor distributed")
    assert_nothing_recorded(cli)


def test_run_takes_a_torch_launcher_under_the_distributed_executor(cli, workdir):
    dry = cli("run", "--dry-run", "--executor", "distributed", "--workdir", str(workdir), "--",
              "torchrun", "--nproc-per-node", "2", "train.py")
    assert dry.code == 0, dry.output
    assert_nothing_recorded(cli)


def test_run_without_a_command(cli, workdir):
    assert_usage_error(cli("run", "--workdir", str(workdir), "--"), "no command given")
    assert_nothing_recorded(cli)


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("PORT: 8080\n", "'PORT' must map to a string"),
        ("DEBUG: yes\n", "'DEBUG' must map to a string"),
        ("- A=1\n- B=2\n", "must be a mapping"),
        ("A=1\nnot an assignment\n", "line 2"),
    ],
)
def test_run_rejects_a_bad_env_file(cli, workdir, tmp_path, text, keyword):
    env_file = tmp_path / "job.env"
    env_file.write_text(text)
    result = cli("run", "--workdir", str(workdir), "--env-file", str(env_file), "--", "python", "x.py")
    message = assert_usage_error(result, keyword)
    assert str(env_file) in message
    assert_nothing_recorded(cli)


@pytest.mark.parametrize("source", ["env file", "spec"])
def test_run_refuses_tsubmits_variables_from_an_env_file_or_a_spec(cli, workdir, tmp_path, source):
    if source == "env file":
        env_file = tmp_path / "job.env"
        env_file.write_text("A=1\nTSUBMIT_RANK_MARKER=hidden\n")
        args = ["--env-file", str(env_file), "--", "python", "x.py"]
    else:
        spec = tmp_path / "job.yml"
        spec.write_text(yaml.safe_dump({"workdir": str(workdir), "command": ["python", "x.py"],
                                        "gpus": 2, "env": {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}}))
        args = ["-f", str(spec)]
    result = cli("run", "--workdir", str(workdir), *args)
    assert_usage_error(result, "TSUBMIT_RANK_MARKER" if source == "env file" else "CUDA_VISIBLE_DEVICES")
    assert_nothing_recorded(cli)


def write_inventory(cli, name: str, **host_vars) -> None:
    path = cli.home / "config" / "clusters" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    host = {"ansible_host": "127.0.0.1", "ansible_port": 1, **host_vars}
    path.write_text(yaml.safe_dump({"all": {"hosts": {"node1": host}}}))


@pytest.mark.parametrize(
    ("host_vars", "keyword"),
    [
        ({"ansible_ssh_private_key_file": "/nonexistent/id_ed25519"},
         "identity file /nonexistent/id_ed25519"),
        ({"tsubmit_gpus": "many"}, "tsubmit_gpus"),
        ({"tsubmit_env": {"BAD-KEY": "x"}}, "tsubmit_env"),
    ],
)
def test_run_on_a_cluster_with_bad_inventory_vars(cli, workdir, host_vars, keyword):
    # Caught while reading the inventory, before any archive, record or connection.
    write_inventory(cli, "c", **host_vars)
    result = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "-c", "pass")
    message = assert_usage_error(result, keyword)
    assert "node1" in message
    assert_nothing_recorded(cli)


@pytest.mark.parametrize("spec, keyword", [
    ({"node_timeout": "0s"}, "--node-timeout must be more than 0"),
    ({"node_timeout": "2 minutes"}, "--node-timeout: invalid duration"),
    ({"min_nodes": "2"}, "'min_nodes' must be a whole number")])
def test_a_spec_with_a_bad_recovery_setting_is_refused(cli, workdir, spec, keyword):
    (workdir / "job.yaml").write_text(yaml.safe_dump({"command": "python -c pass", **spec}))
    assert_usage_error(cli("run", "-f", str(workdir / "job.yaml")), keyword)
    assert_nothing_recorded(cli)


def test_a_spare_that_is_also_the_only_node_is_refused(cli, workdir):
    write_inventory(cli, "c", tsubmit_spare=True)
    result = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "-c", "pass")
    assert_usage_error(result, "every host of")
    assert "is a spare (tsubmit_spare: node1); keep at least one host to launch on" in result.stderr
    assert_nothing_recorded(cli)
    assert_usage_error(cli("cluster", "edit", "c", "--spare", "node1"),
                       "--spare node1: it would leave the cluster no host to launch on")
    assert_usage_error(cli("cluster", "add", "d", "--head", "h", "--spare", "h"),
                       "--spare h is also given as --head or --worker")


def test_run_on_an_unparsable_inventory(cli, workdir):
    path = cli.home / "config" / "clusters" / "c.yml"
    path.parent.mkdir(parents=True)
    path.write_text("all:\n  hosts: [unclosed\n")
    result = cli("run", "-c", "c", "--workdir", str(workdir), "--", "python", "-c", "pass")
    assert_usage_error(result, "inventory")
    assert_nothing_recorded(cli)


# --- tsubmit cluster -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "keyword"),
    [
        (["--head", "a b"], "invalid host 'a b'"),
        (["--head", "h:99999"], "invalid port"),
        (["--head", "h", "--worker", "user@"], "invalid host 'user@'"),
        (["--head", "h", "--identity-file", "/nonexistent/id_rsa"], "identity file"),
        (["--head", "h", "--rdzv-address", "nothere=10.0.0.1"], "not in the cluster: nothere"),
        (["--head", "h", "--rdzv-address", "h"], "malformed --rdzv-address"),
        (["--head", "h", "--gpus", "0"], "--gpus"),
        (["--head", "h", "--python", "~/venv/bin/python"], "--python ~/venv/bin/python: a leading ~ is not "
         "expanded where the job runs; set the full path"),
        ([], "--head"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_cluster_add_rejects_bad_input_and_writes_nothing(cli, args, keyword):
    assert_usage_error(cli("cluster", "add", "c", *args), keyword)
    assert cluster_files(cli) == []


@pytest.mark.parametrize(("name", "keyword"), [("local", "'local'"), ("../x", "invalid cluster name")])
def test_cluster_add_rejects_reserved_and_bad_names(cli, name, keyword):
    assert_usage_error(cli("cluster", "add", name, "--head", "h"), keyword)
    assert cluster_files(cli) == []
    assert not (cli.home / "config" / "x.yml").exists()


def test_cluster_add_twice_keeps_the_first(cli):
    cli.ok("cluster", "add", "c", "--head", "first")
    assert_usage_error(cli("cluster", "add", "c", "--head", "second"), "already exists")
    assert "first" in (cli.home / "config" / "clusters" / "c.yml").read_text()
    assert "second" not in (cli.home / "config" / "clusters" / "c.yml").read_text()


@pytest.mark.parametrize(
    ("name", "keyword"), [("nope", "unknown cluster 'nope'"), ("local", "cannot be removed")]
)
def test_cluster_remove_unknown_or_local(cli, name, keyword):
    assert_usage_error(cli("cluster", "remove", name), keyword)


def test_cluster_show_unknown(cli):
    assert_usage_error(cli("cluster", "show", "nope"), "unknown cluster 'nope'")


def test_cluster_create_without_a_terminal(cli):
    result = cli("cluster", "create", "c", input="h\n\n\n\n\n")
    assert_usage_error(result, "terminal")
    assert "cluster add" in result.stderr
    assert cluster_files(cli) == []


# --- job commands ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["logs", "status", "stop", "restart", "delete"])
def test_unknown_job(cli, command):
    extra = ["--yes"] if command == "delete" else []
    assert_usage_error(cli(command, "nosuchjob", *extra), "no job matches 'nosuchjob'")
    assert_nothing_recorded(cli)


def test_delete_needs_jobs_or_all(cli):
    assert_usage_error(cli("delete", "--yes"), "--all")


def test_delete_without_yes_off_a_terminal_keeps_the_job(with_job):
    cli, job_id = with_job
    result = cli("delete", job_id)
    assert_usage_error(result, "--yes")
    assert "terminal" in result.stderr
    assert_nothing_recorded(cli, known_ids=(job_id,))
    assert cli.job(job_id)["state"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "keyword"),
    [
        (["--rank", "5"], "--rank 5 is out of range"),
        (["--rank", "-1"], "--rank -1 is out of range"),
        (["--attempt", "9"], "--attempt"),
        (["--tail", "-3"], "--tail"),
        (["--rank", "0", "--all"], "--rank R or --all, not both"),
        (["--worker", "-1"], "--worker must be 0 or more"),
        (["--worker", "1", "--rank", "0"], "drop --rank, --all and --setup"),
        (["--worker", "0"], "--worker goes with the torchrun executor"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_logs_rejects_bad_options(with_job, args, keyword):
    cli, job_id = with_job
    assert_usage_error(cli("logs", job_id, *args), keyword)
    assert_nothing_recorded(cli, known_ids=(job_id,))


def test_stop_rejects_a_negative_grace(with_job):
    cli, job_id = with_job
    assert_usage_error(cli("stop", job_id, "--grace", "-1"), "--grace")


def test_an_empty_job_ref_is_rejected_not_matched(with_job):
    # '' is a prefix of every id: it must not pick the only job (think `delete --yes ''`).
    cli, job_id = with_job
    assert_usage_error(cli("status", ""), "job")
    assert_nothing_recorded(cli, known_ids=(job_id,))


@pytest.mark.parametrize(("args", "spec", "keyword"), [
    (["--restarts", "-1"], None, "--restarts must be 0 or more, got -1"),
    (["--restarts", "two"], None, "'--restarts'"),
    ([], {"restarts": -2}, "--restarts must be 0 or more, got -2"),
    ([], {"restarts": "3"}, "'restarts' must be a whole number"),
], ids=["negative", "not a number", "negative in a spec", "a string in a spec"])
def test_run_refuses_a_bad_restart_policy(cli, workdir, tmp_path, args, spec, keyword):
    if spec is not None:
        path = tmp_path / "job.yml"
        path.write_text(yaml.safe_dump({"workdir": str(workdir), "command": ["python", "x.py"], **spec}))
        args = ["-f", str(path)]
    else:
        args = [*args, "--workdir", str(workdir), "--", "python", "x.py"]
    assert_usage_error(cli("run", *args), keyword)
    assert_nothing_recorded(cli)
