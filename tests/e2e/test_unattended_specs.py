"""Unattended submissions without cron: spec files, the overlap policy, JSON output and
retention, the parts a cron entry relies on. The cron tests themselves, which edit the
real crontab, are in test_unattended.py."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.harness.jobs import start

pytestmark = pytest.mark.e2e


def normalised(dry_run: dict) -> dict:
    """A dry run without what differs between two submissions of the same job."""
    text = json.dumps(dry_run)
    for key in ("tsubmit_job_id", "submitted_at"):
        text = text.replace(str(_find(dry_run, key)), "<x>")
    return json.loads(text)


def _find(value, key):
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for item in value.values():
            found = _find(item, key)
            if found is not None:
                return found
    return None


def test_a_spec_with_every_key_runs_the_same_job_as_the_flags(cli, nodes, workdir, tmp_path):
    inventory = nodes.write_inventory(tmp_path / "hosts.yml", group="trainers")
    vault = tmp_path / "vault-pass"
    vault.write_text("unused\n")
    (workdir / "job.env").write_text("FROM_FILE=1\n")
    hook = workdir / "hook.yml"
    hook.write_text("- name: A pre-launch hook\n  ansible.builtin.debug:\n    msg: hook ran\n")
    spec = {
        "inventory": "../hosts.yml", "group": "trainers", "limit": "node1:node2",
        "vault_password_file": "../vault-pass", "name": "every-key", "executor": "distributed",
        "workdir": ".", "command": "python count.py 2 0", "env": {"JOB_A": "a b"},
        "env_file": "job.env", "gpus": 1, "max_restarts": 1, "wait": True, "follow": False,
        "timeout": "10m", "if_running": "skip", "hooks": {"pre_launch_tasks": "hook.yml"},
        "keep_going": True, "queue": True, "queue_timeout": "5m", "hang_timeout": "10m",
        # nothing listens on port 9: a message that cannot be sent leaves the job alone
        "notify": ["json://127.0.0.1:9/"], "notify_on": ["failed"],
        "node_timeout": "5m", "min_nodes": 1, "restarts": 1, "sync_dirs": ["ckpt"],
    }
    # --setup runs on the node, never in a container (refused with --image): its own half
    setup = {"setup": "echo set up for $TSUBMIT_JOB_NAME", "setup_key": ["job.env"]}
    container = {"image": "localhost/train:1", "container_args": ["--shm-size=1g"], "pull": "never"}
    spec_file = workdir / "job.yaml"
    spec_file.write_text(yaml.safe_dump({**spec, **container}))
    flags = ["-i", str(inventory), "-g", "trainers", "--limit", "node1:node2", "--vault-password-file",
             str(vault), "--name", "every-key", "--executor", "distributed", "--workdir", str(workdir),
             "--env", "JOB_A=a b", "--env-file", str(workdir / "job.env"), "--gpus", "1",
             "--max-restarts", "1", "--wait", "--timeout", "10m", "--if-running", "skip",
             "--hook", f"pre_launch_tasks={hook}", "--keep-going", "--queue", "--queue-timeout", "5m",
             "--hang-timeout", "10m",
             "--notify", "json://127.0.0.1:9/", "--notify-on", "failed", "--node-timeout", "5m",
             "--min-nodes", "1", "--restarts", "1", "--sync-dir", "ckpt"]
    container_flags = ["--image", "localhost/train:1", "--container-arg=--shm-size=1g", "--pull", "never"]
    setup_flags = ["--setup", setup["setup"], "--setup-key", "job.env"]
    for extra_keys, extra_flags in ((container, container_flags), (setup, setup_flags)):
        spec_file.write_text(yaml.safe_dump({**spec, **extra_keys}))
        from_flags = cli.ok("run", "--dry-run", "-o", "json", *flags, *extra_flags,
                            "--", "python", "count.py", "2", "0")
        from_spec = cli.ok("run", "--dry-run", "-o", "json", "-f", str(spec_file), cwd=tmp_path)
        assert normalised(from_spec.json()) == normalised(from_flags.json())
    # every key but cluster, which excludes inventory: checked on its own
    optuna = {"study", "direction", "optuna_storage", "dashboard"}  # test_optuna_run.py
    every_key = {field["key"] for field in _fields()} - {"cluster"} - optuna
    assert set(spec) | set(container) | set(setup) == every_key
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    spec_file.write_text(yaml.safe_dump({"cluster": "c", "name": "n", "command": ["python", "x.py"]}))
    assert normalised(cli.ok("run", "--dry-run", "-o", "json", "-f", str(spec_file)).json()) == \
        normalised(cli.ok("run", "--dry-run", "-o", "json", "-c", "c", "--name", "n", "--workdir",
                          str(workdir), "--", "python", "x.py").json())
    spec_file.write_text(yaml.safe_dump({**spec, **setup}))  # the run itself on the nodes, no image

    run = cli("run", "-f", str(spec_file), cwd=tmp_path)
    assert run.code == 0, run.output
    assert "job" in run.stdout and "succeeded" in run.stdout
    assert "set up for every-key" in cli.ok("logs", "every-key", "--setup").stdout
    # a second run of the same name while none runs is not skipped
    assert cli.ok("run", "-f", str(spec_file), "--executor", "distributed", cwd=tmp_path)


def _fields():
    from tsubmit.model.jobspec import FIELDS

    return [{"key": field.key} for field in FIELDS]


def test_print_spec_round_trips(cli, workdir, tmp_path):
    printed = cli.ok("run", "--print-spec", "--name", "n", "--executor", "distributed", "--gpus", "2",
                     "--env", "A=1", "--timeout", "90m", "--workdir", str(workdir), "--",
                     "python", "-c", "print('a b')").stdout
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(printed)
    again = cli.ok("run", "--print-spec", "-f", str(spec_file)).stdout
    assert again == printed
    assert yaml.safe_load(printed)["command"] == ["python", "-c", "print('a b')"]


def test_options_override_the_spec_and_workdir_is_relative_to_it(cli, tmp_path):
    folder = tmp_path / "jobs"
    (folder / "code").mkdir(parents=True)
    spec_file = folder / "job.yaml"
    spec_file.write_text("workdir: code\ncommand: [python, x.py]\ngpus: 2\nname: from-file\n")
    printed = yaml.safe_load(cli.ok("run", "--print-spec", "-f", str(spec_file), "--gpus", "3").stdout)
    assert printed["workdir"] == str(folder / "code")
    assert printed["gpus"] == 3 and printed["name"] == "from-file"


def test_the_shipped_json_schema_matches_the_spec_fields():
    from tsubmit.model import jobspec

    assert jobspec.SCHEMA_FILE.read_text() == jobspec.schema_text()
    schema = json.loads(jobspec.SCHEMA_FILE.read_text())
    assert schema["additionalProperties"] is False and "command" in schema["required"]


@pytest.mark.parametrize(("content", "message"), [
    ("clustr: a\ncommand: [x]\n", "line 1: unknown key 'clustr' (did you mean 'cluster'?)"),
    ("command: [x]\ngpus: many\n", "line 2: 'gpus' must be a whole number, got 'many'"),
    ("name: x\n", "no command given"),
    ("command: [x\n", "is not valid YAML, line 2"),
    ("- a\n- b\n", "must be a mapping"),
    ("command: [x]\nif_running: sometimes\n", "'if_running' must be one of allow, skip, replace, fail"),
    ("command: [x]\nhang_timeout: soon\n", "--hang-timeout: invalid duration 'soon'"),
    ("command: [x]\nhang_timeout: 0\n", "--hang-timeout must be more than 0 seconds, got '0'"),
])
def test_bad_spec_files(cli, tmp_path, content, message):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(content)
    run = cli("run", "-f", str(spec_file))
    assert run.code == 2, run.output
    assert message in run.stderr
    assert "Traceback" not in run.output


def test_a_spec_path_that_does_not_exist(cli, tmp_path):
    run = cli("run", "-f", str(tmp_path / "nope.yaml"))
    assert run.code == 2 and "nope.yaml does not exist" in run.stderr


def test_unknown_if_running_policy(cli, workdir):
    run = cli("run", "--name", "x", "--if-running", "sometimes", "--workdir", str(workdir), "--", "python")
    assert run.code == 2
    assert "--if-running must be one of allow, skip, replace, fail, got 'sometimes'" in run.stderr


def sleeper(workdir, name, policy):
    return ["run", "--name", name, "--if-running", policy, "--executor", "distributed",
            "--workdir", str(workdir), "--", "python", "sleeper.py"]


def test_ten_concurrent_skip_submissions_give_one_job(cli, workdir):
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: cli(*sleeper(workdir, "racer", "skip")), range(10)))
    assert [r.code for r in results] == [0] * 10, [r.output for r in results if r.code]
    jobs = cli.ok("list", "-o", "json").json()
    assert len(jobs) == 1 and jobs[0]["state"] == "running"
    assert sum("skipped" in r.stdout for r in results) == 9

    refused = cli(*sleeper(workdir, "racer", "fail"))
    assert refused.code == 4 and jobs[0]["id"] in refused.stderr

    cli.ok(*sleeper(workdir, "racer", "replace"))
    states = {job["id"]: job["state"] for job in cli.ok("list", "-o", "json").json()}
    assert states.pop(jobs[0]["id"]) == "stopped"
    assert list(states.values()) == ["running"]
    cli.ok("delete", "--all", "--yes")


def test_json_outputs_carry_the_documented_keys(cli, workdir):
    run = cli.ok("run", "-o", "json", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                 "--", "python", "-c", "pass").json()
    job_keys = {"id", "name", "cluster", "executor", "command", "state", "attempt", "created_at",
                "ended_at", "message", "ranks", "inventory", "env"}
    assert job_keys <= set(run)
    assert {"rank", "host", "state", "pid", "exit_code", "started_at", "ended_at", "attempt"} <= set(
        run["ranks"][0])
    assert job_keys <= set(cli.ok("status", run["id"], "-o", "json").json())
    assert [j["id"] for j in cli.ok("list", "-o", "json").json()] == [run["id"]]
    clusters = cli.ok("cluster", "list", "-o", "json").json()
    assert {"name", "source", "sources", "group", "hosts"} <= set(clusters[0])


def test_gc_removes_old_finished_jobs_and_leaves_running_ones(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    finished = start(cli, "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                     "--", "python", "-c", "pass")
    running = start(cli, "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
                    "python", "sleeper.py")
    members = nodes.nodes[:2]
    dry = cli.ok("gc", "--older-than", "0s", "--dry-run", "-o", "json").json()
    assert [j.split()[0] for j in dry["jobs"]] == [finished]
    assert all((n.remote_root / finished).exists() for n in members)

    cli.ok("gc", "--older-than", "0s")
    assert not any((n.remote_root / finished).exists() for n in members)
    assert all((n.remote_root / running).exists() for n in members)
    assert [j["id"] for j in cli.ok("list", "-o", "json").json()] == [running]
    assert cli.job(running)["state"] == "running"
    cli.ok("stop", running, "--grace", "5")
