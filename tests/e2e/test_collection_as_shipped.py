"""For ops teams, the collection as it ships: built from the checkout and
installed from its tarball beside it (nothing of the checkout hides it), its
roles' argument specs honest about their defaults, the example README's
minimal playbook run against real nodes, and archive_cli's default folder."""

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.harness.jobs import attempt_dir, exit_code

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ROLES = sorted(path.name for path in (REPO / "roles").iterdir() if (path / "meta").is_dir())


def operator_env(**extra: str) -> dict:
    """An operator's shell: the venv's tools, no Ansible or tsubmit settings of the test process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "TSUBMIT_"))}
    return {**env, "PATH": f"{BIN}:{env['PATH']}", "ANSIBLE_NOCOLOR": "1", **extra}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """tsubmit.cluster built from the checkout and installed from its tarball: the collections folder."""
    base = tmp_path_factory.mktemp("shipped")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(base)],
                   cwd=REPO, env=operator_env(), check=True, capture_output=True, text=True)
    [tarball] = base.glob("tsubmit-cluster-*.tar.gz")
    installed = subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(base / "collections")],
        cwd=base, env=operator_env(), capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Nothing to do" not in installed.stdout, installed.stdout
    assert "was installed successfully" in installed.stdout, installed.stdout
    return base / "collections"


def test_nothing_of_the_checkout_is_on_the_venvs_python_path(tmp_path):
    printed = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sys.path))"],
                             cwd=tmp_path, env=operator_env(), capture_output=True, text=True, check=True)
    for entry in json.loads(printed.stdout):
        assert not (tmp_path / entry / "ansible_collections" / "tsubmit").exists(), entry
    # and tsubmit itself still imports, from the checkout
    where = subprocess.run([sys.executable, "-c", "import tsubmit.paths; print(tsubmit.paths.ansible_dir())"],
                           cwd=tmp_path, env=operator_env(), capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(REPO)


def test_the_installed_tarball_is_the_only_copy_ansible_sees(shipped, tmp_path):
    env = operator_env(ANSIBLE_COLLECTIONS_PATH=str(shipped))
    listed = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "list", "tsubmit.cluster"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert str(shipped / "ansible_collections") in listed.stdout
    assert str(REPO) not in listed.stdout, listed.stdout
    doc = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "tsubmit.cluster.launch"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert str(shipped / "ansible_collections" / "tsubmit" / "cluster") in doc.stdout


def test_ansible_lint_sees_one_copy_of_the_collection(shipped, tmp_path):
    (tmp_path / "site.yml").write_text(minimal_playbook())
    (tmp_path / "roles" / "prepare_nodes" / "tasks").mkdir(parents=True)
    write_prepare_role(tmp_path / "roles" / "prepare_nodes")
    lint = subprocess.run([str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "site.yml"],
                          cwd=tmp_path, env=operator_env(ANSIBLE_COLLECTIONS_PATH=str(shipped)),
                          capture_output=True, text=True, timeout=600)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Another version of 'tsubmit.cluster'" not in lint.stdout + lint.stderr


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_shows_each_roles_real_defaults(shipped, tmp_path, role):
    """Every role variable in defaults/main.yml shows that default (a tsubmit_* host
    variable's, usually), never `default: null`."""
    doc = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "-j", f"tsubmit.cluster.{role}"],
                         cwd=tmp_path, env=operator_env(ANSIBLE_COLLECTIONS_PATH=str(shipped)),
                         capture_output=True, text=True, check=True)
    [entry_points] = [value["entry_points"] for value in json.loads(doc.stdout).values()]
    path = REPO / "roles" / role / "defaults" / "main.yml"  # a role may read host variables only
    defaults = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    checked = 0
    for entry_point, spec in entry_points.items():
        for name, option in spec.get("options", {}).items():
            if name in defaults and not option.get("required"):
                assert option.get("default") == defaults[name], (entry_point, name, option.get("default"))
                checked += 1
    # Every documented default is checked (a role with tasks_from entry points only has no main).
    documented = {name for spec in entry_points.values() for name in spec.get("options", {})}
    assert checked >= len([name for name in defaults if name in documented])


def test_preflight_documents_tsubmit_nproc(shipped, tmp_path):
    doc = subprocess.run([str(BIN / "ansible-doc"), "-t", "role", "-j", "tsubmit.cluster.preflight"],
                         cwd=tmp_path, env=operator_env(ANSIBLE_COLLECTIONS_PATH=str(shipped)),
                         capture_output=True, text=True, check=True)
    [entry_points] = [value["entry_points"] for value in json.loads(doc.stdout).values()]
    options = entry_points["main"]["options"]
    assert options["tsubmit_nproc"]["type"] == "int"
    assert options["tsubmit_nproc"]["default"] == "{{ tsubmit_gpus | default(0) }}"


# --- the example README's own playbook ------------------------------------------------------


EXAMPLE_README = REPO / "examples" / "playbook" / "README.md"


def minimal_playbook() -> str:
    """The YAML block of the README's "From a playbook of your own", as the README shows it."""
    text = EXAMPLE_README.read_text()
    section = text[text.index("## 4. From a playbook of your own"):]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def write_prepare_role(role: Path) -> None:
    """The operator's own role, run before tsubmit's."""
    (role / "tasks").mkdir(parents=True, exist_ok=True)
    (role / "tasks" / "main.yml").write_text("---\n" + yaml.safe_dump([{
        "name": "Prepare the node",
        "ansible.builtin.debug": {"msg": "preparing {{ inventory_hostname }}"}}], sort_keys=False))


def test_the_readmes_minimal_playbook_runs_a_job_on_the_nodes(shipped, nodes, workdir, tmp_path):
    members = nodes.nodes[:2]
    nodes.write_inventory(tmp_path / "hosts.yml", group="trainers", members=members)
    (tmp_path / "site.yml").write_text(minimal_playbook())
    write_prepare_role(tmp_path / "roles" / "prepare_nodes")
    packed = subprocess.run([sys.executable, "-m", "tsubmit.archive_cli", str(workdir), str(tmp_path / "o")],
                            env=operator_env(TSUBMIT_HOME=str(tmp_path / "home")), capture_output=True,
                            text=True, check=True)
    (tmp_path / "archive.json").write_text(packed.stdout)
    job_id = f"mine-{uuid.uuid4().hex[:8]}"

    play = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "hosts.yml", "site.yml", "-e", "@archive.json",
         "-e", f"tsubmit_job_id={job_id}",
         "-e", json.dumps({"tsubmit_job_command": ["python", "allreduce.py"]})],
        cwd=tmp_path, env=operator_env(ANSIBLE_COLLECTIONS_PATH=str(shipped)), capture_output=True, text=True,
        timeout=300)
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    assert play.stdout.index("prepare_nodes : Prepare the node") < play.stdout.index("preflight : ")
    for rank, node in enumerate(members):
        attempt = attempt_dir(node, job_id, rank)
        assert exit_code(attempt) == 0, (attempt / "output.log").read_text()
        log = (attempt / "output.log").read_text()
        assert f"/2 node {rank} allreduce=3 expected=3 weights_in_sync=True OK" in log, log


def test_the_minimal_playbook_names_a_missing_variable_before_anything_runs(shipped, nodes, tmp_path):
    nodes.write_inventory(tmp_path / "hosts.yml", group="trainers", members=nodes.nodes[:1])
    (tmp_path / "site.yml").write_text(minimal_playbook())
    write_prepare_role(tmp_path / "roles" / "prepare_nodes")
    play = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "hosts.yml", "site.yml", "-e", "tsubmit_job_id=x",
         "-e", json.dumps({"tsubmit_job_command": ["python", "x.py"]})],
        cwd=tmp_path, env=operator_env(ANSIBLE_COLLECTIONS_PATH=str(shipped)), capture_output=True, text=True,
        timeout=300)
    assert play.returncode != 0
    assert "missing required arguments: tsubmit_job_archive_digest" in play.stdout, play.stdout[-3000:]
    assert not (nodes.nodes[0].remote_root / "x").exists()


# --- archive_cli --------------------------------------------------------------------------------


def test_archive_cli_says_and_uses_tsubmits_state_folder_by_default(workdir, tmp_path):
    env = operator_env(TSUBMIT_HOME=str(tmp_path / "home"))
    folder = tmp_path / "home" / "state" / "archives"
    shown = subprocess.run([sys.executable, "-m", "tsubmit.archive_cli", "--help"], env=env,
                           capture_output=True, text=True, check=True)
    assert str(folder) in "".join(shown.stdout.split())  # argparse wraps it anywhere
    packed = subprocess.run([sys.executable, "-m", "tsubmit.archive_cli", str(workdir)], env=env,
                            capture_output=True, text=True, check=True)
    assert Path(json.loads(packed.stdout)["tsubmit_job_archive"]).parent == folder
    assert "state directory" in EXAMPLE_README.read_text()
