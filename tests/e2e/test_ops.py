"""For ops teams: the collection tsubmit.cluster (installed with the wheel, built
for Galaxy), tsubmit's roles from an ordinary playbook, inventory hooks, role
overrides from TSUBMIT_ANSIBLE_PATH, and `tsubmit ansible-info`."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.harness.jobs import attempt_dir, exit_code

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
EXAMPLE = REPO / "examples" / "playbook"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from the repository, pip-installed into a folder of its own."""
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base), str(REPO)],
                   check=True, capture_output=True)
    [wheel] = base.glob("tsubmit-*.whl")
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    return target


def installed_env(target: Path, home: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(target), "TSUBMIT_HOME": str(home)}


def tsubmit_ansible_env(target: Path, home: Path) -> dict:
    """The variables the installed tsubmit sets for Ansible."""
    printed = subprocess.run(
        [sys.executable, "-c", "import json; from tsubmit.nodes import ansible_env; "
         "print(json.dumps(ansible_env.environment()))"],
        env=installed_env(target, home), cwd=home, capture_output=True, text=True, check=True)
    return json.loads(printed.stdout)


def write_hook(path: Path, tasks: list[dict]) -> Path:
    path.write_text(yaml.safe_dump(tasks, sort_keys=False))
    return path


# --- the collection --------------------------------------------------------------------------


def test_the_installed_wheel_carries_the_collection_ansible_finds(installed, tmp_path):
    collection = installed / "tsubmit" / "_ansible" / "ansible_collections" / "tsubmit" / "cluster"
    for name in ("galaxy.yml", "meta/runtime.yml", "roles/launch/meta/argument_specs.yml",
                 "roles/preflight/files/probe.py", "playbooks/submit.yml", "plugins/action/run_script.py"):
        assert (collection / name).is_file(), name
    env = {**os.environ, **tsubmit_ansible_env(installed, tmp_path)}
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(":")[0] == str(installed / "tsubmit" / "_ansible")

    listed = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list", "tsubmit.cluster"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert re.search(rf"tsubmit\.cluster\s+{re.escape(VERSION)}", listed.stdout), listed.stdout
    assert str(installed) in listed.stdout

    doc = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "tsubmit.cluster.launch"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "start one rank there, detached" in doc.stdout
    for option in ("tsubmit_job_command", "tsubmit_env", "tsubmit_pre_launch_tasks",
                   "tsubmit_pre_launch_roles", "tsubmit_post_launch_tasks"):
        assert option in doc.stdout, option
    assert str(collection) in doc.stdout
    action_doc = subprocess.run([str(BIN / "ansible-doc"), "tsubmit.cluster.run_script"],
                                env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "as one tar stream" in " ".join(action_doc.stdout.split())


def test_a_source_checkout_reaches_the_collection_through_its_links(tmp_path):
    env = {**os.environ, "TSUBMIT_HOME": str(tmp_path)}
    info = subprocess.run([sys.executable, "-m", "tsubmit", "ansible-info", "-o", "json"], cwd=REPO,
                          env=env, capture_output=True, text=True, check=True)
    collection = json.loads(info.stdout)["collection"]
    assert collection == {"name": "tsubmit.cluster", "version": VERSION,
                          "path": str(REPO / "ansible_collections" / "tsubmit" / "cluster")}
    for name in ("galaxy.yml", "meta", "roles", "playbooks", "plugins"):
        link = REPO / "ansible_collections" / "tsubmit" / "cluster" / name
        assert link.resolve() == (REPO / name).resolve(), name


def test_the_build_script_builds_the_collection_with_its_own_readme(tmp_path):
    """scripts/build-collection.sh: the artifact Galaxy imports, whose README.md (the one
    Galaxy shows) is the collection's, not tsubmit's."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(REPO / "scripts" / "build-collection.sh"), str(tmp_path)],
                   cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    [artifact] = tmp_path.glob("tsubmit-cluster-*.tar.gz")
    assert artifact.name == f"tsubmit-cluster-{VERSION}.tar.gz"
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
        readme = tar.extractfile("README.md").read().decode()
    assert manifest["collection_info"]["version"] == VERSION
    assert manifest["collection_info"]["readme"] == "README.md"
    assert readme == (REPO / "ansible_collections" / "tsubmit" / "cluster" / "README.md").read_text()
    assert "## Role Variables" in readme and "## Example Playbook" in readme
    for name in ("meta/runtime.yml", "README.md", "playbooks/submit.yml", "playbooks/tasks/on_stop_hooks.yml",
                 "roles/launch/tasks/main.yml", "roles/launch/templates/launch.sh.j2",
                 "roles/stop/files/stop.sh", "plugins/action/run_script.py"):
        assert name in names, name
    tops = {name.split("/")[0] for name in names}
    assert tops <= {"MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "meta", "roles",
                    "playbooks", "plugins"}, tops


# --- tsubmit's roles from your own playbook ------------------------------------------------


def run_example(inventory: Path, collections: Path, *extravars: str) -> subprocess.CompletedProcess:
    """examples/playbook/launch.yml run by a plain ansible-playbook with the collection on its path."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_NOCOLOR": "1"}
    env.pop("ANSIBLE_ROLES_PATH", None)
    arguments = [arg for extra in extravars for arg in ("-e", extra)]
    play = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(EXAMPLE / "launch.yml"), *arguments],
        env=env, cwd=inventory.parent, capture_output=True, text=True, timeout=300)
    assert play.returncode == 0, play.stdout + play.stderr
    return play


def test_the_example_playbook_launches_a_job_without_the_cli(installed, nodes, workdir, tmp_path):
    members = nodes.nodes[:2]
    inventory = nodes.write_inventory(tmp_path / "hosts.yml", group="trainers", members=members)
    collections = installed / "tsubmit" / "_ansible"
    packed = subprocess.run(
        [sys.executable, "-m", "tsubmit.archive_cli", str(workdir), str(tmp_path / "out")],
        env=installed_env(installed, tmp_path / "home"), capture_output=True, text=True, check=True)
    archive = tmp_path / "archive.json"
    archive.write_text(packed.stdout)
    assert Path(json.loads(packed.stdout)["tsubmit_job_archive"]).parent == tmp_path / "out"

    job_id = f"example-{uuid.uuid4().hex[:8]}"
    play = run_example(inventory, collections, f"@{archive}", json.dumps(
        {"tsubmit_job_id": job_id, "tsubmit_job_command": ["python", "allreduce.py"]}))
    assert f"job {job_id} rank 1: pid" in play.stdout
    for rank, node in enumerate(members):
        attempt = attempt_dir(node, job_id, rank)
        assert exit_code(attempt) == 0, (attempt / "output.log").read_text()
        log = (attempt / "output.log").read_text()
        assert f"/2 node {rank} allreduce=3 expected=3 weights_in_sync=True OK" in log, log
        assert (node.remote_root / job_id / "workdir" / "allreduce.py").is_file()

    # A plain tar archive, and the playbook's defaults: its digest and the job id.
    tree = tmp_path / "tree.tar.gz"
    subprocess.run(["tar", "-czf", str(tree), "-C", str(workdir), "."], check=True)
    command = ["python", "-c", "import os; print('hello', os.environ['RANK'])"]
    play = run_example(inventory, collections, f"tsubmit_job_archive={tree}", json.dumps(
        {"tsubmit_job_executor": "distributed", "tsubmit_job_name": "tarred",
         "tsubmit_job_command": command}))
    job_ids = set(re.findall(r"job (tarred-\d{8}-\d{6}) rank \d", play.stdout))
    assert len(job_ids) == 1, play.stdout
    [job_id] = job_ids
    for rank, node in enumerate(members):
        attempt = attempt_dir(node, job_id, rank)
        assert exit_code(attempt) == 0, (attempt / "output.log").read_text()
        assert (attempt / "output.log").read_text() == f"hello {rank}\n"
    digest = subprocess.run(["sha256sum", str(tree)], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    assert (members[0].remote_root / ".archives" / f"{digest}.tar.gz").is_file()


# --- hooks ------------------------------------------------------------------------------------


def test_a_pre_launch_hook_runs_on_every_node_before_the_job(cli, nodes, workdir, tmp_path):
    hook = write_hook(tmp_path / "pre.yml", [{
        "name": "Leave a marker in the job's tree",
        "ansible.builtin.copy": {"content": "{{ inventory_hostname }}\n",
                                 "dest": "{{ launch_workdir }}/hook-marker", "mode": "0644"},
    }])
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_pre_launch_tasks=[str(hook)])
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "hooked", "--wait",
              "--workdir", str(workdir), "--", "python", "-c",
              "import os; print('marker', open('hook-marker').read().strip() "
              "if os.path.exists('hook-marker') else None, 'rank', os.environ['NODE_RANK'])")
    assert run.code == 0, run.output
    logs = cli.ok("logs", "hooked", "--all").stdout
    for rank, node in enumerate(nodes.nodes[:2]):
        assert f"marker {node.name} rank {rank}" in logs, logs


def test_post_launch_and_on_stop_hooks_run_around_the_rank(cli, nodes, workdir, tmp_path):
    post = write_hook(tmp_path / "post.yml", [{
        "name": "Record the rank's pid",
        "ansible.builtin.copy": {"content": "{{ launch_started.stdout }}\n",
                                 "dest": "{{ launch_attempt_dir }}/post-launch", "mode": "0644"},
    }])
    on_stop = write_hook(tmp_path / "on_stop.yml", [{
        "name": "Record what was stopped",
        "ansible.builtin.copy": {"content": "{{ tsubmit_job_id }} {{ stop_result.stdout }}\n",
                                 "dest": "{{ stop_remote_root }}/{{ tsubmit_job_id }}"
                                         "/on-stop-{{ tsubmit_rank }}",
                                 "mode": "0644"},
    }])
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_post_launch_tasks=str(post),
                      tsubmit_on_stop_tasks=[str(on_stop)])
    cli.ok("run", "-c", "c", "--executor", "distributed", "--name", "around", "--workdir", str(workdir),
           "--", "python", "sleeper.py")
    job = cli.job("around")
    for rank in job["ranks"]:
        node = nodes.nodes[rank["rank"]]
        recorded = (attempt_dir(node, job["id"], rank['rank']) / "post-launch")
        assert recorded.read_text().split()[0] == str(rank["pid"])
    cli.ok("stop", "around")
    for rank, node in enumerate(nodes.nodes[:2]):
        assert nodes.processes_of(node, "sleeper.py") == []
        # stop_result names what the stop role stopped: the hook ran after it.
        text = (node.remote_root / job["id"] / f"on-stop-{rank}").read_text()
        assert text.startswith(f"{job['id']} stopped ") and f"rank-{rank}/attempt-1" in text, text


def test_a_failing_pre_launch_hook_rolls_the_launch_back(cli, nodes, workdir, tmp_path):
    hook = write_hook(tmp_path / "pre.yml", [{
        "name": "Require the dataset",
        "ansible.builtin.fail": {"msg": "dataset not mounted on {{ inventory_hostname }}"},
        "when": "tsubmit_rank | int == 1",
    }])
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_pre_launch_tasks=[str(hook)])
    run = cli("run", "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
              "python", "sleeper.py")
    assert run.code == 3, run.output
    assert f"{nodes.nodes[1].name}: dataset not mounted on {nodes.nodes[1].name}" in run.stderr
    assert "Traceback" not in run.output
    [job] = cli.ok("list", "-o", "json").json()
    assert job["state"] == "failed"
    for node in nodes.nodes[:2]:
        assert nodes.processes_of(node, "sleeper.py") == []
        assert not (node.remote_root / job["id"]).exists()


@pytest.mark.parametrize("variable, value, message", [
    ("tsubmit_pre_launch_tasks", ["/nonexistent/pre.yml"],
     "tsubmit_pre_launch_tasks: /nonexistent/pre.yml does not exist on the controller"),
    ("tsubmit_post_launch_tasks", "hooks/post.yml",
     "tsubmit_post_launch_tasks: hooks/post.yml is not an absolute path to a task file on the controller"),
    ("tsubmit_pre_launch_roles", ["no_such_role"],
     "tsubmit_pre_launch_roles: role no_such_role not found in "),
])
def test_a_hook_that_is_not_there_is_one_clear_line(cli, nodes, workdir, variable, value, message,
                                                   monkeypatch):
    cli.write_cluster("c", nodes, nodes.nodes[:2], **{variable: value})
    run = cli("run", "-c", "c", "--executor", "distributed", "--workdir", str(workdir), "--",
              "python", "sleeper.py")
    # 3 while `tsubmit run` leaves the check to the launch role (every node
    # says the same line); 2 once it calls tsubmit.nodes.hooks.check first.
    assert run.code in (2, 3), run.output
    assert message in run.stderr, run.stderr
    assert "Traceback" not in run.output
    for node in nodes.nodes[:2]:
        assert nodes.processes_of(node, "sleeper.py") == []

    # The controller-side check tsubmit run can call: the same line, exit 2.
    from tsubmit.errors import EXIT_USAGE, UsageError
    from tsubmit.nodes import hooks

    monkeypatch.delenv("TSUBMIT_ANSIBLE_PATH", raising=False)
    with pytest.raises(UsageError) as raised:
        hooks.check({"node1": {variable: value}})
    assert raised.value.exit_code == EXIT_USAGE
    assert str(raised.value).startswith(f"host node1: {message}")
    with pytest.raises(UsageError, match=f"^{re.escape(message)}"):
        hooks.check({"node1": {}}, {variable: value})


def test_the_hook_check_accepts_what_the_roles_accept(tmp_path, monkeypatch):
    from tsubmit.nodes import hooks

    task_file = write_hook(tmp_path / "pre.yml", [])
    (tmp_path / "roles" / "mount_data" / "tasks").mkdir(parents=True)
    monkeypatch.setenv("TSUBMIT_ANSIBLE_PATH", str(tmp_path / "roles"))
    hooks.check({"node1": {"tsubmit_pre_launch_tasks": str(task_file),
                           "tsubmit_on_stop_tasks": ["{{ inventory_dir }}/hooks/stop.yml"],
                           "tsubmit_pre_launch_roles": ["mount_data", "preflight"]}},
                {"tsubmit_job_post_launch_tasks": [str(task_file)]})
    assert hooks.find_role("mount_data") == tmp_path / "roles" / "mount_data"
    assert hooks.find_role("tsubmit.cluster.launch").name == "launch"
    assert hooks.find_role("tsubmit.cluster.nope") is None


# --- overrides and ansible-info ----------------------------------------------------------------


def test_a_launch_role_from_tsubmit_ansible_path_replaces_the_built_in_one(cli, nodes, workdir, tmp_path):
    ops = tmp_path / "ops"
    shutil.copytree(REPO / "roles" / "launch", ops / "launch")
    template = ops / "launch" / "templates" / "environment.sh.j2"
    template.write_text(template.read_text() + "export TEAM_LAUNCH=ops-{{ launch_rank }}\n")
    cli.env["TSUBMIT_ANSIBLE_PATH"] = f"{tmp_path / 'empty'}:{ops}"
    (tmp_path / "empty").mkdir()

    info = cli.ok("ansible-info", "-o", "json").json()
    assert info["roles_path"][:3] == [str(tmp_path / "empty"), str(ops), str(REPO / "roles")]
    assert info["roles"]["launch"] == {"path": str(ops / "launch"), "overridden": True}
    assert info["roles"]["preflight"] == {"path": str(REPO / "roles" / "preflight"), "overridden": False}

    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "team", "--wait",
              "--workdir", str(workdir), "--", "python", "-c",
              "import os; print('team', os.environ.get('TEAM_LAUNCH'))")
    assert run.code == 0, run.output
    logs = cli.ok("logs", "team", "--all").stdout
    assert "team ops-0" in logs and "team ops-1" in logs, logs


def test_a_replaced_launch_role_that_breaks_the_contract_is_rolled_back(cli, nodes, workdir, tmp_path):
    ops = tmp_path / "ops"
    shutil.copytree(REPO / "roles" / "launch", ops / "launch")
    tasks = ops / "launch" / "tasks" / "main.yml"
    original = "- name: Ship the job's tree and launch script, and start the rank"
    tasks.write_text(tasks.read_text().replace(original, "- name: Start our way"))
    cli.env["TSUBMIT_ANSIBLE_PATH"] = str(ops)
    members = nodes.nodes[:2]
    cli.write_cluster("c", nodes, members)
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "renamed", "--workdir", str(workdir),
              "--", "python", "sleeper.py")
    assert run.code == 3, run.output
    assert "the launch role printed no pid" in run.stderr and "Start the rank detached" in run.stderr
    [job] = cli.ok("list", "-o", "json").json()
    assert job["state"] == "failed"
    for node in members:  # what did start was stopped and removed
        assert nodes.processes_of(node, r"sleeper\.py") == []
        assert not (node.remote_root / job["id"]).exists()


def test_ansible_info_shows_what_tsubmit_runs(cli, tmp_path):
    from ansible.release import __version__ as ansible_core

    text = cli.ok("ansible-info").stdout
    assert re.search(rf"^ansible-core\s+{re.escape(ansible_core)}$", text, re.M), text
    config_line = rf"^ansible\.cfg\s+{re.escape(str(REPO / 'ansible.cfg'))} \(tsubmit's own\)$"
    assert re.search(config_line, text, re.M), text
    assert re.search(rf"^playbooks\s+{re.escape(str(REPO / 'playbooks'))}$", text, re.M)
    assert re.search(rf"^roles path\s+{re.escape(str(REPO / 'roles'))}  \(tsubmit\)$", text, re.M), text
    assert re.search(rf"^collections path\s+{re.escape(str(REPO))}  \(tsubmit\)$", text, re.M), text
    assert re.search(r"^collection\s+tsubmit\.cluster ", text, re.M)

    config = tmp_path / "ops.cfg"
    config.write_text("[defaults]\n")
    cli.env["TSUBMIT_ANSIBLE_CONFIG"] = str(config)
    info = cli.ok("ansible-info", "-o", "json").json()
    assert info["ansible_core"] == ansible_core
    assert info["config"] == {"path": str(config), "source": "TSUBMIT_ANSIBLE_CONFIG", "exists": True}
    assert info["playbooks"] == str(REPO / "playbooks")
    assert info["roles_path"][0] == str(REPO / "roles")
    assert info["collections_path"][0] == str(REPO)
    assert set(info["roles"]) >= {"preflight", "launch", "stop", "cleanup", "status"}


def test_a_tsubmit_ansible_path_that_does_not_exist_is_a_usage_error(cli, nodes, workdir, tmp_path):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    cli.env["TSUBMIT_ANSIBLE_PATH"] = f"{tmp_path}:{tmp_path / 'missing'}"
    for args in (["run", "-c", "c", "--workdir", str(workdir), "--", "python", "sleeper.py"],
                 ["ansible-info"]):
        result = cli(*args)
        assert result.code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"tsubmit: TSUBMIT_ANSIBLE_PATH: {tmp_path / 'missing'} is not a folder; list folders "
            "that hold roles or ansible_collections/, separated by ':'"]
    del cli.env["TSUBMIT_ANSIBLE_PATH"]
    assert cli.ok("list", "-o", "json").json() == []
