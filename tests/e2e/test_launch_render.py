"""The launch role's scripts rendered on the controller, once (render_launch),
are byte for byte the scripts the role renders itself per host; `--dry-run`
shows byte for byte what a node receives; a restart renders as run does.

The same job goes twice through the real launch role in a real
ansible-playbook run (the collection's role, tsubmit's ansible.cfg and
extra-vars file with the job's strings marked !unsafe): once as a plain
ansible-playbook run renders it (the templates, per host), once with
launch_render_on_controller as `tsubmit run` sets it. The probe's answers
are fixed (set_fact), so the two runs differ in nothing else; the hosts are
`ansible_connection: local`, since what is compared is the controller's work.
The launch stops short of starting the rank (a pre-launch hook makes
start_rank.sh only stage, and the hook step is skipped by tag), so what each
host's attempt folder holds is exactly what the launch placed there.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tsubmit import ansible_env, archive
from tsubmit.ansible_run import vars_yaml
from tsubmit.job import Job, Rank
from tsubmit.submit import extravars

pytestmark = pytest.mark.usefixtures("no_injection")  # tests/conftest.py

HOSTS = ["h0", "h1", "h2"]
# The job's own strings: data, which neither way may evaluate.
HOSTILE_COMMAND = ["python", "-c", "print('{{ 7 * 7 }}')", "it's", "$(touch /tmp/tsubmit-render-pwned)",
                   "{% raw %}x", "line1\nline2", "ünï", ""]
HOSTILE_ENV = {"TEMPLATE": "{{ lookup('pipe', 'touch /tmp/tsubmit-render-pwned') }}", "QUOTES": "it's \"x\"",
               "NEWLINES": "a\nb\n", "EMPTY": "", "DOLLAR": "$HOME ${PATH}"}

PLAYBOOK = """\
- name: Launch with fixed probe answers
  hosts: tsubmit_nodes
  gather_facts: false
  tasks:
    - name: The probe's answers
      ansible.builtin.set_fact:
        preflight_nodes: "{{ test_probes }}"
      run_once: true
    - name: The head's study store
      ansible.builtin.set_fact:
        optuna_store_endpoint: "{{ test_optuna }}"
      when: tsubmit_rank == 0
    - name: Launch
      ansible.builtin.import_role:
        name: tsubmit.cluster.launch
    - name: Which hosts' scripts came rendered from the controller
      ansible.builtin.debug:
        msg: >-
          rendered on the controller: [{{ launch_rendered.ship | default({}) | list | sort | join(',') }}]
      run_once: true
"""

VARIANTS = {
    "distributed": dict(executor="distributed", command=HOSTILE_COMMAND, env=HOSTILE_ENV, max_restarts=2),
    "torchrun": dict(executor="torchrun", command=["python", "train.py", "--lr", "0.1"], env={"A": "1"}),
    "container": dict(executor="distributed", command=["python", "train.py"], env={"B": "{{ b }}"},
                      extras={"container": {"image": "img:{{ tag }}", "args": ["--shm-size", "1g", "-e X=$Y"],
                                            "pull": "missing"}}),
    # The setup runs here too (start_rank.sh runs it before staging); its string is data.
    "setup": dict(executor="distributed", command=["python", "train.py"], env={},
                  extras={"setup": {"command": "echo '{{ 7 * 7 }}' > \"$TSUBMIT_SETUP_DIR/out\"",
                                    "key": "0123456789abcdef0123", "key_files": []}}),
    "optuna": dict(executor="optuna", command=["python", "objective.py"], env={},
                   extras={"optuna": {"study": "s", "storage": None, "trials": 4}}),
}


def inventory(tmp_path: Path, hook: Path) -> dict:
    hosts = {}
    for rank, name in enumerate(HOSTS):
        hosts[name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "tsubmit_rank": rank,
            "tsubmit_node_address": f"127.0.0.{rank + 1}",
            "tsubmit_pre_launch_tasks": [str(hook)],
            # The inventory's own values are templates, rendered by Ansible both ways.
            "tsubmit_env": {"TOKEN": "{{ test_secret }}-{{ inventory_hostname }}", "NUMBER": 8,
                            "LITERAL": "a b; $(x)"},
        }
    hosts["h0"]["tsubmit_python"] = "/opt/my env/bin/python"
    hosts["h1"]["tsubmit_torchrun"] = "/opt/it's/bin/torchrun"
    hosts["h1"]["tsubmit_container_engine"] = "podman"
    hosts["h1"]["tsubmit_gpu_lease_dir"] = "/run/team's leases"
    hosts["h1"]["tsubmit_container_run_args"] = ["--ulimit", "nofile=1024", "--ipc=private"]
    # A host that overrides a role variable keeps the role's own rendering.
    hosts["h2"]["launch_torchrun"] = "/srv/{{ inventory_hostname }}/torchrun"
    return {"all": {"vars": {"test_secret": "s3cr3t"}, "children": {"tsubmit_nodes": {"hosts": hosts}}}}


def probes(tmp_path: Path, executor: str) -> dict:
    answers = {}
    for rank, name in enumerate(HOSTS):
        root = tmp_path / "roots" / name
        (root / ".archives").mkdir(parents=True, exist_ok=True)
        picks_port = rank == 0 or executor == "optuna"
        answers[name] = {"remote_root": str(root), "address": f"127.0.0.{rank + 1}", "gpus": rank + 1,
                         "has_gpus": rank == 1, "port": 29400 + rank if picks_port else None,
                         "archive_present": False, "tree_present": False,
                         # h0 has no GPUs, h1 leases its 2, h2 opts out of its 3 (--gpus 0)
                         "gpu_ids": list(range(2 * rank - 1)) if rank else [], "lease": 2 if rank == 1 else 0}
    return answers


def run_launch(tmp_path: Path, job: Job, packed: archive.Archive, on_controller: bool) -> dict[str, dict]:
    """Run the launch role; return each host's remote root as the launch left
    it: {relative path: (mode, bytes)} of every file, folder and link."""
    shutil.rmtree(tmp_path / "roots", ignore_errors=True)
    variables = {**extravars(job, packed), "test_probes": probes(tmp_path, job.executor),
                 "test_optuna": {"study": "s", "storage_url": None, "host": "127.0.0.1", "port": 4242},
                 "launch_render_on_controller": on_controller}
    (tmp_path / "extravars.yml").write_text(vars_yaml(variables))
    process = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-v", "-i", str(tmp_path / "inventory.yml"),
         "-e", f"@{tmp_path / 'extravars.yml'}", "--skip-tags", "pre_launch_hooks,post_launch_hooks",
         str(tmp_path / "playbook.yml")],
        env={**os.environ, **ansible_env.environment()}, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout + process.stderr
    # h2 sets a launch_* variable of its own: the role renders its scripts itself.
    expected = "[h0,h1]" if on_controller else "[]"
    assert f"rendered on the controller: {expected}" in process.stdout, process.stdout
    placed = {}
    for rank, name in enumerate(HOSTS):
        attempt = tmp_path / "roots" / name / job.id / f"rank-{rank}" / f"attempt-{job.attempt}"
        root = tmp_path / "roots" / name
        placed[name] = {str(path.relative_to(root)): _entry(path) for path in sorted(root.rglob("*"))}
        for done in [path for path in placed[name] if path.startswith(".setup/") and path.endswith(".done")]:
            placed[name][done] = placed[name][done][0], "the setup's finishing time"
        assert not (attempt / "pid").exists()  # staged, never started
    return placed


def _entry(path: Path) -> tuple:
    mode = path.lstat().st_mode
    if path.is_symlink():
        return mode, os.readlink(path)
    return mode, path.read_bytes() if path.is_file() else None


def packed_tree(tmp_path):
    """A one-file working tree and its archive."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "train.py").write_text("print('hi')\n")
    return tree, archive.pack(tree, tmp_path / "archives")


def job_of(tree, **fields) -> Job:
    """The job both ways launch, on the inventory's HOSTS in order."""
    return Job(id="abc123def0", cluster="c", inventory={}, workdir=str(tree),
               ranks=[Rank(rank, name, f"127.0.0.{rank + 1}", None) for rank, name in enumerate(HOSTS)],
               **fields)


@pytest.mark.parametrize("variant", VARIANTS)
def test_controller_rendering_is_byte_for_byte_the_roles(tmp_path, variant):
    fields = dict(VARIANTS[variant])
    hook = tmp_path / "hook.yml"
    hook.write_text("- name: Nothing\n  ansible.builtin.meta: noop\n")
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory(tmp_path, hook), sort_keys=False))
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    tree, packed = packed_tree(tmp_path)
    job = job_of(tree, name="job {{ name }}", attempt=2, **fields)

    by_role = run_launch(tmp_path, job, packed, on_controller=False)
    on_controller = run_launch(tmp_path, job, packed, on_controller=True)

    # Every file the ship task sent (the scripts, job.json, the archive, the
    # lease helper, the setup's), where start_rank.sh placed it, and its mode.
    for name in HOSTS:
        assert on_controller[name] == by_role[name], f"{name}: the launch placed different files"
    attempt = f"{job.id}/rank-{{}}/attempt-{job.attempt}"
    # h1 leases GPUs: only it gets the lease helper.
    assert [f"{attempt.format(rank)}/gpu_lease.py" in by_role[name] for rank, name in enumerate(HOSTS)] == [
        False, True, False]
    meta = json.dumps(extravars(job, packed)["tsubmit_job_meta"], indent=4, sort_keys=True)
    assert by_role["h0"][f"{job.id}/workdir/.tsubmit/job.json"][1] == (meta + "\n").encode()
    scripts = {name: {file: by_role[name][f"{attempt.format(rank)}/{file}"][1]
                      for file in ("launch.sh", "environment.sh")} for rank, name in enumerate(HOSTS)}
    environment = scripts["h0"]["environment.sh"].decode()
    assert "s3cr3t-h0" in environment  # the inventory's template was rendered
    assert "lookup(" in environment or not fields["env"].get("TEMPLATE")  # the job's was not
    if "container" not in job.extras:  # in a container the image's PATH holds
        # h2's own launch_torchrun (rendered by Ansible: a template of the inventory) is on its PATH.
        assert b"export PATH=/srv/h2:" in scripts["h2"]["environment.sh"]


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
    assert any("Render every rank" in path.read_text() for path in events)  # the step ran, censored


# What --dry-run shows for what only the launch knows (tsubmit/render.py), and
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
    job_id = re.search(r"job (\w+)", run.stdout).group(1)
    dry_id = dry["extravars"]["tsubmit_job_id"]
    for rank, node in enumerate(members):
        attempt = node.remote_root / job_id / f"rank-{rank}" / "attempt-1"
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


RENDER_TASK = "Render every rank's launch scripts on the controller"
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
    job_id = re.search(r"job (\w+)", run.stdout).group(1)
    cli.ok("restart", job_id)
    assert cli.ok("status", job_id, "-o", "json").json()["attempt"] == 2
    submits = sorted((cli.home / "state" / "runs").glob("*-submit-*"), key=lambda path: path.stat().st_mtime)
    assert len(submits) == 2
    assert [_render_task_status(path) for path in submits] == [{"runner_on_ok"}, {"runner_on_ok"}]


def test_a_restart_whose_host_left_the_inventory_is_refused_naming_it(cli, nodes, workdir):
    cluster = cli.write_cluster("two", nodes, nodes.nodes[:2])
    run = cli.ok("run", "-c", "two", "--executor", "distributed", "--wait", "--workdir", str(workdir), "--",
                 "true")
    job_id = re.search(r"job (\w+)", run.stdout).group(1)
    cli.write_cluster("two", nodes, nodes.nodes[:1])
    assert cluster.exists()
    refused = cli("restart", job_id)
    assert refused.code == 2, refused.output
    assert f"host {nodes.nodes[1].name} is no longer in {cluster}" in refused.stderr
    job = cli.job(job_id)
    assert (job["attempt"], job["state"]) == (1, "succeeded")


# --- the probe's request, computed once on the controller (probe_requests) ------

PROBE_PLAYBOOK = """\
- name: The probe's request, both ways
  hosts: tsubmit_nodes
  gather_facts: false
  tasks:
    # Only the role's variables (an imported role's are the play's); its tasks are skipped.
    - name: The preflight role's variables
      ansible.builtin.import_role:
        name: tsubmit.cluster.preflight
      when: false
    - name: Every host's request at once, as the role's first task does
      tsubmit.cluster.probe_requests:
        hosts: "{{ ansible_play_hosts }}"
      run_once: true
      when: test_on_controller
      register: preflight_requests
    - name: What the probe task sends
      ansible.builtin.copy:
        content: "{{ preflight_request_json }}"
        dest: "{{ test_out }}/{{ inventory_hostname }}.json"
        mode: "0600"
    - name: Which hosts' requests came from the controller
      ansible.builtin.debug:
        msg: >-
          computed on the controller: [{{ preflight_requests.requests | default({}) | sort | join(',') }}]
      run_once: true
"""


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_probe_request_computed_on_the_controller_is_byte_for_byte_the_roles(tmp_path, variant):
    fields = dict(VARIANTS[variant])
    extras = dict(fields.pop("extras", {}))
    hosts = inventory(tmp_path, tmp_path / "hook.yml")
    members = hosts["all"]["children"]["tsubmit_nodes"]["hosts"]
    # The role's defaults read these too; the inventory's templates stay templates.
    members["h0"].update(tsubmit_remote_root="/srv/{{ inventory_hostname }}/jobs", tsubmit_gpus="2",
                         tsubmit_nproc="{{ 1 + 1 }}")
    members["h1"].update(tsubmit_gpus=4)
    # A host that overrides a preflight_* variable keeps the role's own request.
    members["h2"]["preflight_python"] = "/opt/{{ inventory_hostname }}/python"
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    (tmp_path / "playbook.yml").write_text(PROBE_PLAYBOOK)
    tree, packed = packed_tree(tmp_path)
    job = job_of(tree, name="job", attempt=1,
                 extras={**extras, "gpus": 1} if variant == "torchrun" else extras, **fields)
    sent = {}
    for on_controller in (False, True):
        out = tmp_path / f"out-{on_controller}"
        out.mkdir()
        variables = {**extravars(job, packed), "test_out": str(out), "test_on_controller": on_controller}
        (tmp_path / "extravars.yml").write_text(vars_yaml(variables))
        process = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
             "-e", f"@{tmp_path / 'extravars.yml'}", str(tmp_path / "playbook.yml")],
            env={**os.environ, **ansible_env.environment()}, capture_output=True, text=True, timeout=300)
        assert process.returncode == 0, process.stdout + process.stderr
        expected = "[h0,h1]" if on_controller else "[]"
        assert f"computed on the controller: {expected}" in process.stdout, process.stdout
        sent[on_controller] = {name: (out / f"{name}.json").read_bytes() for name in HOSTS}
    for name in HOSTS:
        assert sent[True][name] == sent[False][name], f"{name}: the probe's request differs"
    h0, h1, h2 = (json.loads(sent[True][name]) for name in HOSTS)
    assert (h0["remote_root"], h0["nproc"], h0["gpus_declared"]) == ("/srv/h0/jobs", 2, 2)
    assert h1["path_prefix"] == "/opt/it's/bin"
    assert h2["path_prefix"] == "/opt/h2"  # its own preflight_python, rendered by Ansible
    if variant == "distributed":
        assert h0["commands"] == [HOSTILE_COMMAND[0]] and h0["head_address"] == "127.0.0.1"
        assert h1["head_address"] == ""
    if variant == "container":
        assert h1["container"]["engine"] == "podman" and h1["commands"] == []


def test_a_job_on_three_nodes_probes_with_the_requests_computed_on_the_controller(cli, nodes, workdir):
    cli.write_cluster("three", nodes, nodes.nodes[:3])
    run = cli.ok("run", "-c", "three", "--executor", "distributed", "--wait", "--workdir", str(workdir), "--",
                 "python", "-c", "import os; print('rank', os.environ['RANK'])")
    job_id = re.search(r"job (\w+)", run.stdout).group(1)
    assert cli.ok("status", job_id, "-o", "json").json()["state"] == "succeeded"
    (submit,) = (cli.home / "state" / "runs").glob("*-submit-*")
    events = [json.loads(path.read_text()) for path in submit.glob("artifacts/*/job_events/*.json")]
    task = "Compute every node's probe request on the controller"
    ended = {event["event"] for event in events
             if event["event"] in ENDED and event.get("event_data", {}).get("task") == task}
    assert ended == {"runner_on_ok"}
