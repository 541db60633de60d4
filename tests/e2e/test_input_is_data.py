"""A job's input is data (issue 15): nothing a user types is evaluated by
Ansible, a shell or a template, whichever way it reaches the nodes.

Every job here carries strings that Ansible would evaluate if it took them as
templates (a `pipe` lookup that would create a file on the controller, a sum,
an unclosed `{% raw %}`, a Jinja-like checkpoint pattern) and ones a shell
would evaluate. Each test checks what a user would: what the rank printed on
its node, that the file was never created, and what `--dry-run` and `--check`
show for the same input.
"""

import json
import re
import shlex
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.harness import eventually
from tests.harness.jobs import attempt_dir, exit_code, job_id_of

pytestmark = pytest.mark.e2e

SHOW = """\
import json, os, sys
names = sorted(k for k in os.environ if k.startswith("JOB_"))
print("SEEN " + json.dumps({"argv": sys.argv[1:], "name": os.environ["TSUBMIT_JOB_NAME"],
                            "env": {k: os.environ[k] for k in names},
                            "study": os.environ.get("STUDY_NAME")}), flush=True)
"""


@pytest.fixture
def marker():
    """A file that exists only if some string was evaluated (on the controller or a node:
    the test nodes share this machine's /tmp)."""
    path = Path("/tmp") / f"tsubmit-pwned-{uuid.uuid4().hex[:12]}"
    yield path
    existed = path.exists()
    path.unlink(missing_ok=True)
    assert not existed, f"{path} was created: a job's string was evaluated"


def hostile(marker: Path) -> list[str]:
    return [f"{{{{ lookup('pipe', 'touch {marker}') }}}}", "{{ 7*7 }}", "{% raw %}",
            "--fmt={{epoch}}.ckpt", "{# not a comment #}", "$(touch " + str(marker) + ")",
            "`touch " + str(marker) + "`", "it's \"quoted\"", "007", "true", ""]


def hostile_name(marker: Path) -> str:
    return f"n-{{{{ lookup('pipe','touch {marker}') }}}}-{{{{ 7*7 }}}}-{{% raw %}}"


def hostile_env(marker: Path) -> dict[str, str]:
    strings = hostile(marker)
    return {"JOB_LOOKUP": strings[0], "JOB_SUM": strings[1], "JOB_RAW": strings[2],
            "JOB_FMT": strings[3], "JOB_SHELL": strings[5], "JOB_OCTAL": "007", "JOB_EQ": "a=b={{ c }}"}


@pytest.fixture
def show_dir(workdir):
    (workdir / "show_args.py").write_text(SHOW)
    return workdir


def seen_in(text: str) -> list[dict]:
    """The SEEN records a log or an output holds; under torchrun each line starts with its
    worker's prefix ([worker N], docs/reference/environment.md)."""
    lines = (re.sub(r"^\[worker \d+\] ", "", line) for line in text.splitlines())
    return [json.loads(line.removeprefix("SEEN ")) for line in lines if line.startswith("SEEN ")]


def seen_on_nodes(nodes, job_id: str, count: int) -> list[dict]:
    """What each rank printed, read from its log on its node."""
    found = []
    for rank, node in enumerate(nodes.nodes[:count]):
        log = (attempt_dir(node, job_id, rank) / "output.log").read_text()
        seen = seen_in(log)
        assert seen, log
        found += seen
    return found


def run_options(source: str, tmp_path: Path, *, name: str, env: dict, command: list[str],
                **keys) -> list[str]:
    """The same job given on the command line or in a spec file; the env's first
    variable comes from an env file."""
    env_file = tmp_path / "job.env.yaml"
    first, *rest = env.items()
    env_file.write_text(yaml.safe_dump(dict([first])))
    env = dict(rest)
    if source == "spec":
        spec = tmp_path / "job.yaml"
        spec.write_text(yaml.safe_dump({"name": name, "env": env, "env_file": str(env_file),
                                        "command": command, **keys}))
        return ["-f", str(spec)]
    options = ["--name", name, "--env-file", str(env_file)]
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    for key, value in keys.items():
        options += [f"--{key}", str(value)]
    return [*options, "--", *command]


@pytest.mark.parametrize("executor,source", [("distributed", "cli"), ("distributed", "spec"),
                                             ("torchrun", "spec"), ("torchrun", "cli")])
def test_every_rank_receives_the_strings_byte_for_byte(cli, nodes, show_dir, tmp_path, marker,
                                                       executor, source):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    odd_file = "{{ 7*7 }} it's $(id) {% raw %}.txt"
    (show_dir / odd_file).write_text("mine")
    name, env = hostile_name(marker), hostile_env(marker)
    command = ["python", "show_args.py", *hostile(marker)]
    options = run_options(source, tmp_path, name=name, env=env, command=command,
                          executor=executor, workdir=str(show_dir))

    dry = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", *options).json()
    run = cli("run", "-c", "c", "--wait", *options)
    assert run.code == 0, run.output
    job_id = job_id_of(run)

    for seen in seen_on_nodes(nodes, job_id, 2):
        assert seen["argv"] == hostile(marker)
        assert seen["name"] == name
        assert seen["env"] == env
    job_json = json.loads((nodes.nodes[1].remote_root / job_id / "workdir" / ".tsubmit" / "job.json")
                          .read_text())
    assert job_json["name"] == name and job_json["command"] == command
    assert (nodes.nodes[1].remote_root / job_id / "workdir" / odd_file).read_text() == "mine"
    assert cli.job(job_id)["name"] == name
    if source == "cli":  # a restart reads the job back from the store and runs it again
        cli.ok("restart", job_id)
        attempt = attempt_dir(nodes.nodes[0], job_id, 0, 2)
        exit_code(attempt, timeout=60)
        [again] = seen_in((attempt / "output.log").read_text())
        assert again == {"argv": hostile(marker), "name": name, "env": env, "study": None}

    # --dry-run shows what the ranks received, for the same input
    assert dry["extravars"]["tsubmit_job_command"] == command
    assert dry["extravars"]["tsubmit_job_name"] == name
    for rank in dry["ranks"]:
        assert rank["command"].endswith(shlex.join(command))
        assert f"export TSUBMIT_JOB_NAME={shlex.quote(name)}\n" in rank["environment"]
    assert not marker.exists()


def test_check_shows_what_dry_run_shows_and_starts_nothing(cli, nodes, show_dir, marker):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    name = hostile_name(marker)
    options = ["--executor", "distributed", "--name", name, "--env", f"JOB_SECRET={hostile(marker)[0]}",
               "--workdir", str(show_dir), "--", "python", "show_args.py", *hostile(marker)]
    dry = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", *options).json()
    check = cli.ok("run", "-c", "c", "--check", *options).stdout
    for rank, node in zip(dry["ranks"], nodes.nodes[:2], strict=True):
        shown = check.split(f"# rank {rank['rank']} on {node.name}: command\n", 1)[1]
        command, environment = shown.split(f"# rank {rank['rank']} on {node.name}: environment\n", 1)
        assert command.strip() == rank["command"]
        assert f"export TSUBMIT_JOB_NAME={shlex.quote(name)}\n" in environment
        assert "export JOB_SECRET='<set>'" in environment  # masked, as in --dry-run
    assert "check mode: nothing was launched" in check
    assert cli.ok("list", "-o", "json").json() == []
    for node in nodes.nodes[:2]:
        assert nodes.processes_of(node, r"show_args\.py") == []


def test_an_inventory_template_in_tsubmit_env_still_renders(cli, nodes, show_dir, marker):
    # The inventory is the ops team's: its values are templates; the job's never are.
    cli.write_cluster("c", nodes, nodes.nodes[:1], vault_token="s3cret-from-inventory",
                      tsubmit_env={"JOB_TOKEN": "{{ vault_token }}", "JOB_PLAIN": "plain"})
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--name", "inv",
              "--env", "JOB_MINE={{ vault_token }}", "--workdir", str(show_dir), "--",
              "python", "show_args.py", "{{ vault_token }}")
    assert run.code == 0, run.output
    [seen] = seen_on_nodes(nodes, job_id_of(run), 1)
    assert seen["env"] == {"JOB_TOKEN": "s3cret-from-inventory", "JOB_PLAIN": "plain",
                           "JOB_MINE": "{{ vault_token }}"}
    assert seen["argv"] == ["{{ vault_token }}"]


# The test image holds a shell and coreutils, no python: the rank prints with printf.
def show_sh(names) -> str:
    return ("""for arg in "$@"; do printf 'ARG[%s]\\n' "$arg"; done\n"""
            """printf 'NAME[%s]\\n' "$TSUBMIT_JOB_NAME"\n"""
            f"for name in {' '.join(names)}; do\n"
            """    printf 'ENV[%s][%s]\\n' "$name" "$(printenv "$name")"\ndone\n""")


def seen_by_shell(log: str) -> dict:
    return {"argv": re.findall(r"^ARG\[(.*)\]$", log, re.M),
            "name": re.search(r"^NAME\[(.*)\]$", log, re.M).group(1),
            "env": dict(re.findall(r"^ENV\[(\w+)\]\[(.*)\]$", log, re.M))}


def test_a_container_job_receives_the_strings_through_its_env_file(cli, nodes, show_dir, marker):
    from tests.harness.images import build_image, container_cluster

    image = build_image(nodes.nodes[0].user)
    (show_dir / "show_args.sh").write_text(show_sh(hostile_env(marker)))
    container_cluster(cli, nodes)
    name, env = hostile_name(marker), hostile_env(marker)
    command = ["sh", "show_args.sh", *hostile(marker)]
    options = ["--image", image, "--executor", "docker", "--name", name,
               "--container-arg=--label=tsubmit.note={{ 7*7 }}",
               *[f"--env={key}={value}" for key, value in env.items()],
               "--workdir", str(show_dir), "--", *command]
    dry = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", *options).json()
    run = cli("run", "-c", "c", "--wait", *options)
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    for rank, node in enumerate(nodes.nodes[:2]):
        log = (attempt_dir(node, job_id, rank) / "output.log").read_text()
        assert seen_by_shell(log) == {"argv": hostile(marker), "name": name, "env": env}, log
    for rank in dry["ranks"]:
        assert rank["command"].endswith(shlex.join(command))
        assert "'--label=tsubmit.note={{ 7*7 }}'" in rank["command"]


def test_an_optuna_job_receives_the_strings_and_its_study_name(cli, nodes, show_dir, marker):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    (show_dir / "search_args.py").write_text(SHOW + "import tsubmit_optuna\n"
                                             "study = tsubmit_optuna.load_study()\n"
                                             "print('STUDY ' + json.dumps(study.study_name))\n")
    study = f"s-{{{{ lookup('pipe','touch {marker}') }}}}/../$(touch {marker})"
    name, env = hostile_name(marker), hostile_env(marker)
    options = ["--executor", "optuna", "--study", study, "--name", name,
               *[f"--env={key}={value}" for key, value in env.items()],
               "--workdir", str(show_dir), "--", "python", "search_args.py", *hostile(marker)]
    dry = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", *options).json()
    head = nodes.nodes[0]
    studies_before = set(head.remote_root.rglob("*.db"))  # other tests' studies, on shared nodes
    run = cli("run", "-c", "c", "--wait", *options)
    assert run.code == 0, run.output + cli("logs", job_id_of(run), "--all").stdout
    job_id = job_id_of(run)
    for seen in seen_on_nodes(nodes, job_id, 2):
        assert seen["argv"] == hostile(marker) and seen["name"] == name and seen["env"] == env
        assert seen["study"] == study
    logs = cli.ok("logs", job_id, "--all").stdout
    assert logs.count(f"STUDY {json.dumps(study)}") == 2
    # the study's file stays inside the head's studies folder
    made = set(head.remote_root.rglob("*.db")) - studies_before
    assert [path.parent for path in made] == [head.remote_root / "optuna-studies"], made
    for rank in dry["ranks"]:
        assert f"export STUDY_NAME={shlex.quote(study)}\n" in rank["environment"]


def test_a_job_hook_path_is_taken_as_it_is_and_its_variables_stay_data(cli, nodes, show_dir, tmp_path,
                                                                      marker):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    folder = tmp_path / "hooks {{ 7*7 }}"
    folder.mkdir()
    hook = folder / "pre.yml"
    hook.write_text(yaml.safe_dump([{
        "name": "Record the job's name beside its tree",
        "ansible.builtin.copy": {"content": "{{ tsubmit_job_name }}", "dest": "{{ launch_job_dir }}/hooked",
                                 "mode": "0644"}}]))
    name = hostile_name(marker)
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--name", name,
              "--hook", f"pre_launch_tasks={hook}", "--workdir", str(show_dir), "--",
              "python", "show_args.py")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    assert (nodes.nodes[0].remote_root / job_id / "hooked").read_text() == name

    missing = cli("run", "-c", "c", "--hook", f"pre_launch_tasks={folder}/{{{{ 'pre' }}}}.yml",
                  "--workdir", str(show_dir), "--", "python", "show_args.py")
    assert missing.code == 2, missing.output
    assert "{{ 'pre' }}.yml does not exist on the controller" in missing.stderr


def test_a_workdir_whose_tsubmit_folder_is_a_symlink_is_refused(cli, nodes, show_dir, tmp_path):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    outside = tmp_path / "outside"
    outside.mkdir()
    (show_dir / ".tsubmit").symlink_to(outside)
    run = cli("run", "-c", "c", "--workdir", str(show_dir), "--", "python", "show_args.py")
    assert run.code == 2, run.output
    assert f"{show_dir}/.tsubmit is a symbolic link" in run.stderr and ".tsubmitignore" in run.stderr
    assert "Traceback" not in run.output
    assert cli.ok("list", "-o", "json").json() == []
    assert list(outside.iterdir()) == []
    assert list(nodes.nodes[0].remote_root.glob("*/workdir")) == [] or all(
        not (path / ".tsubmit").is_symlink() for path in nodes.nodes[0].remote_root.glob("*/workdir"))

    # ignored, it is not shipped: the node makes a folder of its own
    (show_dir / ".tsubmitignore").write_text(".tsubmit\n")
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--name", "ignored",
              "--workdir", str(show_dir), "--", "python", "show_args.py")
    assert run.code == 0, run.output
    tree = nodes.nodes[0].remote_root / job_id_of(run) / "workdir"
    assert (tree / ".tsubmit").is_dir() and not (tree / ".tsubmit").is_symlink()
    assert list(outside.iterdir()) == []


def test_the_example_search_still_runs_with_a_plain_study(cli, nodes, tmp_path):
    # The Optuna steps read the study from extra-vars marked unsafe like every job value.
    import shutil

    search = tmp_path / "optuna"
    shutil.copytree(EXAMPLES / "optuna", search)
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--executor", "optuna", "--study", "007", "--wait",
              "--workdir", str(search), "--", "python", "search.py", "1")
    assert run.code == 0, run.output
    assert "of study 007;" in cli.ok("logs", job_id_of(run)).stdout


def test_a_job_and_its_followed_log_under_a_remote_root_with_shell_characters(cli, nodes, show_dir, marker):
    # The remote root is the inventory's; `logs -f` builds its own remote command from it.
    head = nodes.nodes[0]
    root = head.remote_root / f"r b $(touch {marker}) `touch {marker}` 'q' ;|&"
    cli.write_cluster("c", nodes, [head], tsubmit_remote_root=str(root))
    run = cli("run", "-c", "c", "--executor", "distributed", "--follow", "--name", hostile_name(marker),
              "--workdir", str(show_dir), "--", "python", "show_args.py", *hostile(marker))
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    [line] = [line for line in run.stdout.splitlines() if line.startswith("SEEN ")]
    assert json.loads(line.removeprefix("SEEN "))["argv"] == hostile(marker)
    assert (root / job_id / "rank-0" / "attempt-1" / "output.log").read_text().startswith(line)
    followed = cli.ok("logs", job_id, "-f").stdout
    assert followed.startswith(line)
    cli.ok("delete", job_id, "--yes")
    assert not (root / job_id).exists()


def test_a_sparse_file_of_the_tree_stays_sparse_on_the_node(cli, nodes, show_dir):
    head = nodes.nodes[0]
    cli.write_cluster("c", nodes, [head])
    size = 256 << 20
    with open(show_dir / "dataset.bin", "wb") as f:
        f.write(b"header")
        f.truncate(size)
    if (show_dir / "dataset.bin").stat().st_blocks * 512 > 1 << 20:
        pytest.skip("this filesystem does not keep holes")
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(show_dir), "--",
              "python", "-c", "import os; f = open('dataset.bin', 'rb'); print('READ', f.read(6), "
              "os.path.getsize('dataset.bin'))")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    assert f"READ b'header' {size}" in cli.ok("logs", job_id).stdout
    unpacked = (head.remote_root / job_id / "workdir" / "dataset.bin").stat()
    assert unpacked.st_size == size and unpacked.st_blocks * 512 < 1 << 20
    shipped = head.remote_root / ".archives" / f"{cli.job(job_id)['archive']}.tar.gz"
    assert shipped.stat().st_size < 1 << 20  # nor shipped in full


def test_an_exported_project_keeps_the_strings_data_for_plain_ansible_playbook(cli, nodes, show_dir,
                                                                              tmp_path, marker):
    import os
    import subprocess
    import sys

    cli.write_cluster("c", nodes, nodes.nodes[:1])
    project = tmp_path / "project"
    name, env = hostile_name(marker), hostile_env(marker)
    exported = cli.ok("export", "-c", "c", "--executor", "distributed", "--name", name,
                      *[f"--env={key}={value}" for key, value in env.items()],
                      "--workdir", str(show_dir), str(project),
                      "--", "python", "show_args.py", *hostile(marker))
    job_id = job_id_of(exported)
    assert "!unsafe" in (project / "extravars.yml").read_text()
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    clean["PATH"] = f"{Path(sys.executable).parent}:{clean['PATH']}"
    play = subprocess.run(["ansible-playbook", "-i", "inventory", "playbooks/submit.yml",
                           "-e", "@extravars.yml"], cwd=project, env=clean, capture_output=True, text=True)
    assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-2000:]
    attempt = attempt_dir(nodes.nodes[0], job_id)
    exit_code(attempt, timeout=60)
    [seen] = seen_in((attempt / "output.log").read_text())
    assert seen == {"argv": hostile(marker), "name": name, "env": env, "study": None}


# The job swaps its tree's .tsubmit/job.json, or .tsubmit itself, for a link to a file
# outside the tree (in its job's folder, which the node's user may write).
LINK_META = {
    "file": "os.remove('.tsubmit/job.json'); os.symlink(victim, '.tsubmit/job.json')",
    "folder": "shutil.rmtree('.tsubmit'); os.mkdir('../elsewhere'); "
              "os.symlink(victim, '../elsewhere/job.json'); os.symlink('../elsewhere', '.tsubmit')",
}


@pytest.mark.parametrize("link", sorted(LINK_META))
def test_a_restart_never_writes_job_json_through_a_link_the_job_made(cli, nodes, workdir, link):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    (workdir / "link_meta.py").write_text(
        "import os, shutil, sys\n"
        "victim = os.path.abspath('../victim')\n"
        "if os.environ['TSUBMIT_ATTEMPT'] == '1':\n"
        "    open(victim, 'w').write('the job wrote this')\n"
        f"    {LINK_META[link]}\n")
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                 "--", "python", "link_meta.py")
    job_id = job_id_of(run)
    tree = nodes.nodes[0].remote_root / job_id / "workdir"
    assert (tree / ".tsubmit").is_symlink() or (tree / ".tsubmit" / "job.json").is_symlink()
    cli.ok("restart", job_id)
    eventually(lambda: cli.job(job_id)["state"] == "succeeded", message="the restarted job succeeded")
    assert (tree.parent / "victim").read_text() == "the job wrote this"
    meta = tree / ".tsubmit" / "job.json"
    assert not (tree / ".tsubmit").is_symlink() and not meta.is_symlink()
    assert json.loads(meta.read_text())["id"] == job_id
