"""Issue 16 on real sshd nodes as unkind as real ones: the node's first python3.13
on PATH is a stale pyenv shim and the inventory names no ansible_python_interpreter
(logs, delete, cluster check); a log that cannot be read; a job whose launch
failed; `logs -f` on a host whose key changed; an ops team's inventory
directory with vaulted variables, a ProxyJump bastion and the head at the
highest address (run, dry-run, check, export, import and later verbs)."""

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.harness.jobs import attempt_dir, job_id_of

pytestmark = pytest.mark.e2e

EXIT_LAUNCH = 3


def discovering_inventory(path: Path, nodes, members, **extra) -> Path:
    """A YAML -i inventory without ansible_python_interpreter, as ops teams write them."""
    hosts = {node.name: {**nodes.host_vars(node, interpreter=False), **extra} for node in members}
    path.write_text(yaml.safe_dump({"all": {"children": {"trainers": {"hosts": hosts}}}},
                                   sort_keys=False))
    return path


def show_env_job(cli, nodes, members, workdir: Path, tmp_path: Path) -> str:
    """The id of a finished show_env.py job on MEMBERS, run through a discovering inventory."""
    inventory = discovering_inventory(tmp_path / "hosts.yml", nodes, members)
    run = cli("run", "-i", str(inventory), "-g", "trainers", "--executor", "distributed", "--wait",
              "--workdir", str(workdir), "--", "python", "show_env.py")
    assert run.code == 0, run.output
    return job_id_of(run)


def env_lines(text: str) -> list[dict]:
    return [json.loads(line.split("ENV ", 1)[1]) for line in text.splitlines() if "ENV " in line]


# --- 1. no remote step depends on Ansible's interpreter discovery ------------------------


def test_logs_and_delete_work_where_the_first_python_is_a_stale_shim(cli, nodes, workdir, tmp_path):
    members = nodes.nodes[:2]
    job = show_env_job(cli, nodes, members, workdir, tmp_path)

    logs = cli("logs", job, "--all")
    assert logs.code == 0, logs.output
    assert sorted(values["NODE_RANK"] for values in env_lines(logs.stdout)) == ["0", "1"]
    assert f"[rank 1 {members[1].name}] ENV " in logs.stdout

    deleted = cli("delete", job, "--yes")
    assert deleted.code == 0, deleted.output
    for node in members:
        assert not (node.remote_root / job).exists()
    assert cli("status", job).code == 2  # forgotten


def test_a_log_that_cannot_be_read_fails_naming_the_host(cli, nodes, workdir, tmp_path):
    members = nodes.nodes[:2]
    job = show_env_job(cli, nodes, members, workdir, tmp_path)
    (attempt_dir(members[1], job, 1) / "output.log").unlink()

    logs = cli("logs", job, "--rank", "1")
    assert logs.code == EXIT_LAUNCH, logs.output
    assert f"{members[1].name}: no log at " in logs.stderr
    assert logs.stdout == ""
    # rank 0's log is still there and still read
    assert env_lines(cli.ok("logs", job).stdout)[0]["NODE_RANK"] == "0"


def test_logs_of_a_job_whose_launch_failed_say_so(cli, nodes, workdir, tmp_path):
    inventory = discovering_inventory(tmp_path / "hosts.yml", nodes, nodes.nodes[:2])
    run = cli("run", "-i", str(inventory), "-g", "trainers", "--executor", "distributed",
              "--workdir", str(workdir), "--", "no-such-program-16", "x")
    assert run.code == EXIT_LAUNCH, run.output
    job = job_id_of(run)
    logs = cli("logs", job)
    assert logs.code == EXIT_LAUNCH, logs.output
    assert f"job {job} has no log: its launch failed" in logs.stderr
    assert "no-such-program-16" in logs.stderr  # the cause, from the job's record
    assert "tsubmit cluster check" in logs.stderr


def test_cluster_check_checks_the_interpreter_ansible_would_discover(cli, nodes, tmp_path):
    members = nodes.nodes[:2]
    inventory = discovering_inventory(tmp_path / "hosts.yml", nodes, members)
    check = cli("cluster", "check", "-i", str(inventory), "-g", "trainers", "-o", "json")
    assert check.code == 0, check.output  # a warning: tsubmit's own steps do not use it
    for node in members:
        python = check.json()["hosts"][node.name]["python"]
        assert python["status"] == "warn", python
        assert f"{nodes.shim_dir}/python3.13 does not run: pyenv: python3.13: command not found" \
            in python["detail"]
        assert "ansible_python_interpreter" in python["remedy"]

    declared = discovering_inventory(tmp_path / "declared.yml", nodes, members,
                                     ansible_python_interpreter=f"{nodes.shim_dir}/python3.13")
    failed = cli("cluster", "check", "-i", str(declared), "-g", "trainers")
    assert failed.code == EXIT_LAUNCH, failed.output
    assert f"FAIL {members[0].name} python:" in failed.stdout
    assert f"set ansible_python_interpreter to a python that runs, e.g. {nodes.python}" in failed.stdout

    fine = discovering_inventory(tmp_path / "fine.yml", nodes, members,
                                 ansible_python_interpreter=nodes.python)
    report = cli("cluster", "check", "-i", str(fine), "-g", "trainers", "-o", "json")
    assert report.code == 0, report.output
    assert {report.json()["hosts"][n.name]["python"]["status"] for n in members} == {"ok"}


# --- 5. messages ----------------------------------------------------------------------


def test_follow_on_a_host_whose_key_changed_fails_at_once_naming_known_hosts(cli, nodes, workdir,
                                                                          tmp_path):
    node = nodes.nodes[0]
    inventory = discovering_inventory(tmp_path / "hosts.yml", nodes, [node])
    run = cli("run", "-i", str(inventory), "-g", "trainers", "--executor", "distributed",
              "--workdir", str(workdir), "--", "python", "sleeper.py", "60")
    assert run.code == 0, run.output
    job = job_id_of(run)
    try:
        # The node "was reinstalled": another node's key under its address.
        other_key = " ".join(nodes.known_hosts.read_text().splitlines()[1].split()[1:])
        changed = tmp_path / "known_hosts"
        changed.write_text(f"[{node.address}]:{node.port} {other_key}\n")
        original = inventory.read_text()
        inventory.write_text(original.replace(str(nodes.known_hosts), str(changed)))
        started = time.monotonic()
        follow = cli("logs", job, "-f", timeout=60)
        assert time.monotonic() - started < 30
        assert follow.code == EXIT_LAUNCH, follow.output
        assert f"cannot follow the log on {node.address}: host key changed" in follow.stderr
        assert str(changed) in follow.stderr
        inventory.write_text(original)
    finally:
        inventory.write_text(inventory.read_text().replace(str(tmp_path / "known_hosts"),
                                                           str(nodes.known_hosts)))
        cli("stop", job)


def test_a_typo_in_the_command_is_named_as_such(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--workdir", str(workdir), "--", "pyhton", "train.py")
    assert run.code == EXIT_LAUNCH, run.output
    assert (f"{nodes.nodes[0].name}: your command's program 'pyhton' is not found on this node; "
            "did you mean 'python'? (fix the command after --)") in run.stderr
    assert "set tsubmit_torchrun" not in run.stderr
    missing = cli("run", "-c", "c", "--workdir", str(workdir), "--", "no-such-tool-16")
    assert missing.code == EXIT_LAUNCH
    assert "your command's program 'no-such-tool-16' is not found on this node" in missing.stderr


def test_host_key_failures_name_the_known_hosts_file_and_the_next_command(cli, nodes, workdir,
                                                                          tmp_path):
    node = nodes.nodes[1]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = discovering_inventory(tmp_path / "unknown.yml", nodes, [node])
    unknown.write_text(unknown.read_text().replace(str(nodes.known_hosts), str(empty)))
    check = cli("cluster", "check", "-i", str(unknown), "-g", "trainers", "-o", "json")
    assert check.code == EXIT_LAUNCH, check.output
    reachable = check.json()["hosts"][node.name]["reachable"]
    assert reachable["status"] == "fail"
    assert f"host key unknown: ssh found no key for [{node.address}]:{node.port} in {empty}" \
        in reachable["remedy"]
    run = cli("run", "-i", str(unknown), "-g", "trainers", "--workdir", str(workdir), "--", "python",
              "show_env.py")
    assert run.code == EXIT_LAUNCH, run.output
    assert f"{node.name}: " in run.stderr and "host key unknown" in run.stderr
    assert "then `tsubmit cluster check`" in run.stderr

    other_key = " ".join(nodes.known_hosts.read_text().splitlines()[0].split()[1:])
    changed_file = tmp_path / "changed_known_hosts"
    changed_file.write_text(f"[{node.address}]:{node.port} {other_key}\n")
    changed = discovering_inventory(tmp_path / "changed.yml", nodes, [node])
    changed.write_text(changed.read_text().replace(str(nodes.known_hosts), str(changed_file)))
    run = cli("run", "-i", str(changed), "-g", "trainers", "--workdir", str(workdir), "--", "python",
              "show_env.py")
    assert run.code == EXIT_LAUNCH, run.output
    assert f"host key changed: ssh checked it against {changed_file}" in run.stderr


def test_an_unreachable_node_points_to_cluster_check(cli, nodes, workdir, tmp_path):
    address, _ = nodes.unreachable_address()
    inventory = discovering_inventory(tmp_path / "hosts.yml", nodes, nodes.nodes[:1])
    inventory.write_text(inventory.read_text().replace(nodes.nodes[0].address, address))
    run = cli("run", "-i", str(inventory), "-g", "trainers", "--workdir", str(workdir), "--", "python",
              "show_env.py")
    assert run.code == EXIT_LAUNCH, run.output
    assert "`tsubmit cluster check` shows what fails on the node" in run.stderr


def test_an_unknown_cluster_suggests_the_close_name(cli, nodes):
    cli.write_cluster("gpus", nodes, nodes.nodes[:1])
    result = cli("run", "-c", "gpu", "--dry-run", "--", "python", "x.py")
    assert result.code == 2
    assert "unknown cluster 'gpu'; did you mean 'gpus'? known clusters: local, gpus" in result.stderr


# --- 2. vaulted variables, the bastion, the head at the highest address ---------------


def ops_args(ops) -> list[str]:
    return ["-i", str(ops.path), "-g", ops.group, "--vault-password-file", str(ops.vault_password_file)]


def assert_no_secret(ops, *texts: str) -> None:
    for text in texts:
        for secret in ops.secrets.values():
            assert secret not in text


def test_a_vaulted_inventory_dry_runs_masked_with_the_head_first(cli, ops_inventory):
    ops = ops_inventory
    dry = cli("run", "--dry-run", *ops_args(ops), "-o", "json", "--", "python", "x.py")
    assert dry.code == 0, dry.output
    plan = dry.json()
    assert [rank["host"] for rank in plan["ranks"]] == [node.name for node in ops.rank_order()]
    assert plan["head"] == {"host": ops.head.name, "reason": "tsubmit_head is set on it"}
    assert_no_secret(ops, dry.output)
    text = cli.ok("run", "--dry-run", *ops_args(ops), "--", "python", "x.py").stdout
    assert "DB_PASSWORD=" in text and "<vaulted>" in text
    assert_no_secret(ops, text)
    # Without the password the inventory still reads (nothing is decrypted).
    assert cli("run", "--dry-run", "-i", str(ops.path), "-g", ops.group, "--", "python", "x.py").code == 0


def test_a_vaulted_inventory_through_a_bastion_runs_and_every_later_verb_works(cli, ops_inventory,
                                                                               ops_nodes, workdir):
    ops = ops_inventory
    (workdir / "secrets.py").write_text(
        "import hashlib, os\n"
        "for name in ('SITE_TOKEN', 'DB_PASSWORD'):\n"
        "    print(name, hashlib.sha256(os.environ[name].encode()).hexdigest(), flush=True)\n")
    run = cli("run", *ops_args(ops), "--executor", "distributed", "--wait", "--workdir", str(workdir),
              "--", "python", "secrets.py")
    assert run.code == 0, run.output
    assert_no_secret(ops, run.output)
    job = job_id_of(run)
    status = cli.job(job)
    assert [rank["host"] for rank in status["ranks"]] == [node.name for node in ops.rank_order()]

    import hashlib

    logs = cli("logs", job, "--all")
    assert logs.code == 0, logs.output
    for rank, node in enumerate(ops.rank_order()):
        for name, key in (("SITE_TOKEN", "site_token"), ("DB_PASSWORD", "db_password")):
            digest = hashlib.sha256(ops.secrets[key].encode()).hexdigest()
            assert f"[rank {rank} {node.name}] {name} {digest}" in logs.stdout

    # Every connection went through the bastion: the control masters' jump processes.
    jumps = [cmd for cmd in _controller_commands() if "-W" in cmd and "tsubmit-bastion" in cmd]
    for node in ops.members:
        assert any(node.address in cmd for cmd in jumps), jumps

    assert cli("delete", job, "--yes").code == 0
    for node in ops.members:
        assert not (node.remote_root / job).exists()


def test_cluster_check_and_import_take_the_vault_password(cli, ops_inventory):
    ops = ops_inventory
    check = cli("cluster", "check", *ops_args(ops), "-o", "json")
    assert check.code == 0, check.output
    report = check.json()
    assert list(report["hosts"]) == [node.name for node in ops.rank_order()]
    assert report["head"] == ops.head.name
    assert_no_secret(ops, check.output)

    imported = cli("cluster", "import", "ops", "-i", str(ops.path), "-g", ops.group,
                   "--vault-password-file", str(ops.vault_password_file))
    assert imported.code == 0, imported.output
    shown = cli.ok("cluster", "show", "ops", "-o", "json").json()
    assert [n["host"] for n in shown["nodes"]] == [node.name for node in ops.rank_order()]
    # The file's path is kept with the cluster (never the password): later commands need no option.
    record = (cli.home / "config").rglob("ops.yml")
    assert any(str(ops.vault_password_file) in path.read_text() for path in record)
    assert cli("cluster", "check", "ops").code == 0
    missing = cli("cluster", "check", *ops_args(ops)[:4], "--vault-password-file", "/nonexistent")
    assert missing.code == 2 and "vault password file /nonexistent does not exist" in missing.stderr


def test_export_of_a_vaulted_inventory(cli, ops_inventory, tmp_path):
    ops = ops_inventory
    target = tmp_path / "project"
    export = cli("export", *ops_args(ops), str(target), "--", "python", "x.py")
    assert export.code == 0, export.output
    assert_no_secret(ops, export.output, *(p.read_text(errors="replace") for p in target.rglob("*")
                                          if p.is_file() and p.suffix != ".gz"))
    assert "--vault-password-file" in (target / "README.md").read_text()


def _controller_commands() -> list[str]:
    commands = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                commands.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return commands
