"""Existing Ansible inventories as clusters, on real sshd nodes: INI, YAML, a
directory with group_vars, a dynamic script; head selection; host variables;
`cluster import`, `cluster edit`; and the inventories a user can get wrong."""

import json
import os
import re
import stat

import pytest
import yaml

from tests.harness.jobs import job_id_of, start

pytestmark = pytest.mark.e2e

CONNECTION = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
              "ansible_ssh_common_args", "ansible_python_interpreter")


def ini_line(nodes, node, **extra) -> str:
    values = {**nodes.host_vars(node), **extra}
    return node.name + " " + " ".join(f"{k}={json.dumps(str(v))}" for k, v in values.items())


def write_ini(path, nodes, members):
    path.write_text("[trainers]\n" + "\n".join(ini_line(nodes, n) for n in members) + "\n")
    return path


def write_directory(path, nodes, members):
    (path / "group_vars").mkdir(parents=True)
    (path / "host_vars").mkdir()
    first = nodes.host_vars(members[0])
    shared = {k: first[k] for k in ("ansible_user", "ansible_ssh_private_key_file",
                                     "ansible_ssh_common_args", "ansible_python_interpreter",
                                     "tsubmit_python")}
    (path / "group_vars" / "trainers.yml").write_text(yaml.safe_dump(shared))
    (path / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"children": {"trainers": {"hosts": {n.name: None for n in members}}}}}))
    for node in members:
        own = {k: v for k, v in nodes.host_vars(node).items() if k not in shared}
        (path / "host_vars" / f"{node.name}.yml").write_text(yaml.safe_dump(own))
    return path


def write_script(path, nodes, members):
    inventory = {"trainers": {"hosts": [n.name for n in members]},
                 "_meta": {"hostvars": {n.name: nodes.host_vars(n) for n in members}}}
    path.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps(inventory) + "\nEOF\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def write_yaml(path, nodes, members):
    return nodes.write_inventory(path, group="trainers", members=members)


@pytest.mark.parametrize("kind", ["ini", "yaml", "directory", "script"])
def test_the_same_job_runs_through_every_kind_of_inventory(cli, nodes, workdir, tmp_path, kind):
    writer, name = {"ini": (write_ini, "hosts.ini"), "yaml": (write_yaml, "hosts.yml"),
                    "directory": (write_directory, "inventory"), "script": (write_script, "inv.sh")}[kind]
    source = writer(tmp_path / name, nodes, nodes.nodes[:2])
    run = cli("run", "-i", str(source), "-g", "trainers", "--executor", "distributed", "--wait",
              "--workdir", str(workdir), "--", "python", "show_env.py")
    assert run.code == 0, run.output
    job = job_id_of(run)
    logs = cli.ok("logs", job, "--all").stdout
    ranks = sorted(json.loads(line.split("ENV ", 1)[1])["NODE_RANK"] for line in logs.splitlines()
                   if "ENV " in line)
    assert ranks == ["0", "1"]


def head_of(cli, *args) -> str:
    return re.search(r"^head: (.*)$", cli.ok("run", "--dry-run", *args, "--", "python", "x.py").stdout,
                     re.M).group(1)


def test_head_selection_rules_and_stable_ranks(cli, nodes, tmp_path):
    a, b, c = nodes.nodes
    base = {"all": {"children": {"trainers": {"hosts": {n.name: nodes.host_vars(n) for n in (a, b, c)}}}}}
    inventory = tmp_path / "hosts.yml"

    inventory.write_text(yaml.safe_dump(base))
    assert head_of(cli, "-i", str(inventory), "-g", "trainers") == f"{a.name} (first host of group trainers)"

    with_group = {**base}
    with_group["all"]["children"]["trainers_head"] = {"hosts": {c.name: None}}
    inventory.write_text(yaml.safe_dump(with_group))
    expected = f"{c.name} (first host of group trainers_head)"
    assert head_of(cli, "-i", str(inventory), "-g", "trainers") == expected

    flagged = yaml.safe_load(yaml.safe_dump(base))
    flagged["all"]["children"]["trainers"]["hosts"][b.name]["tsubmit_head"] = True
    inventory.write_text(yaml.safe_dump(flagged))
    assert head_of(cli, "-i", str(inventory), "-g", "trainers") == f"{b.name} (tsubmit_head is set on it)"
    dry = cli.ok("run", "--dry-run", "-i", str(inventory), "-g", "trainers", "-o", "json", "--",
                 "python", "x.py").json()
    assert [r["host"] for r in dry["ranks"]] == [b.name, a.name, c.name]

    # a real run records the head and its reason; status shows them
    run = cli("run", "--wait", "-i", str(inventory), "-g", "trainers", "--executor", "distributed",
              "--", "python", "-c", "pass", cwd=tmp_path)
    assert run.code == 0, run.output
    job = job_id_of(run)
    assert f"head: {b.name} (tsubmit_head is set on it)" in cli.ok("status", job).stdout


def test_host_variables_torchrun_and_env_reach_the_job(cli, nodes, workdir, tmp_path):
    node = nodes.nodes[0]
    hidden = node.remote_root / f"hidden-bin-{tmp_path.name}"  # readable by the node's user
    hidden.mkdir()
    marker = node.remote_root / "wrapper-was-used"
    wrapper = hidden / "my-torchrun"
    real = os.path.join(os.path.dirname(nodes.python), "torchrun")
    wrapper.write_text(f"#!/bin/sh\ntouch {marker}\nexec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    # the node's python is not the venv's: only tsubmit_torchrun can find torchrun
    cli.write_cluster("c", nodes, [node], tsubmit_torchrun=str(wrapper), tsubmit_python="/usr/bin/python3",
                      tsubmit_env={"NCCL_SOCKET_IFNAME": "lo", "JOB_FROM_HOST": "yes"})
    run = cli("run", "-c", "c", "--wait", "--workdir", str(workdir), "--", "python3", "show_env.py")
    assert run.code == 0, run.output
    assert marker.exists()
    job = job_id_of(run)
    [line] = [ln for ln in cli.ok("logs", job).stdout.splitlines() if "ENV " in ln]
    values = json.loads(line.split("ENV ", 1)[1])
    assert values["JOB_FROM_HOST"] == "yes"
    assert values["PATH"].startswith(f"/usr/bin:{hidden}:")


def test_cluster_import_sees_a_host_added_to_the_inventory_later(cli, nodes, tmp_path):
    inventory = write_yaml(tmp_path / "hosts.yml", nodes, nodes.nodes[:1])
    cli.ok("cluster", "import", "ops", "-i", str(inventory), "-g", "trainers")
    listed = {c["name"]: c for c in cli.ok("cluster", "list", "-o", "json").json()}
    assert listed["ops"]["source"] == "imported" and listed["ops"]["hosts"] == [nodes.nodes[0].name]
    write_yaml(inventory, nodes, nodes.nodes[:2])
    shown = cli.ok("cluster", "show", "ops", "-o", "json").json()
    assert [n["host"] for n in shown["nodes"]] == [nodes.nodes[0].name, nodes.nodes[1].name]
    run = cli("run", "-c", "ops", "--wait", "--executor", "distributed", "--", "python", "-c", "pass",
              cwd=tmp_path)
    assert run.code == 0, run.output
    edit = cli("cluster", "edit", "ops", "--gpus", "2")
    assert edit.code == 2 and "imported from" in edit.stderr


def test_cluster_edit_changes_a_written_cluster(cli):
    cli.ok("cluster", "add", "lab", "--head", "alice@10.0.0.1", "--worker", "10.0.0.2", "--gpus", "8",
           "--lease-dir", "/dev/shm/lab-leases", "--remote-root", "~/jobs")
    # the host options go with the hosts named with them: the added worker only
    cli.ok("cluster", "edit", "lab", "--add-worker", "10.0.0.3:2222", "--remove-host", "10.0.0.2",
           "--gpus", "4", "--lease-dir", "/dev/shm/other", "--rdzv-address", "10.0.0.1=192.168.1.1")
    shown = cli.ok("cluster", "show", "lab", "-o", "json").json()
    assert [(n["host"], n["address"], n["gpus"]) for n in shown["nodes"]] == [
        ("10.0.0.1", "192.168.1.1", 8), ("10.0.0.3", "10.0.0.3", 4)]
    written = yaml.safe_load((cli.home / "config" / "clusters" / "lab.yml").read_text())["all"]
    assert written["vars"]["tsubmit_gpu_lease_dir"] == "/dev/shm/lab-leases"
    assert written["vars"]["tsubmit_remote_root"] == "~/jobs"
    assert written["hosts"]["10.0.0.3"]["tsubmit_gpu_lease_dir"] == "/dev/shm/other"
    cli.ok("cluster", "edit", "lab", "--host", "10.0.0.1", "--remote-root", "/scratch/tsubmit")
    assert yaml.safe_load((cli.home / "config" / "clusters" / "lab.yml").read_text())["all"]["hosts"][
        "10.0.0.1"]["tsubmit_remote_root"] == "/scratch/tsubmit"
    # without hosts named, the whole cluster's, overriding no host apart
    cli.ok("cluster", "edit", "lab", "--gpus", "2")
    shown = cli.ok("cluster", "show", "lab", "-o", "json").json()
    assert [n["gpus"] for n in shown["nodes"]] == [2, 2]
    helped = " ".join(cli.ok("cluster", "edit", "--help").stdout.split())
    assert "apply to the hosts named with them" in helped
    for args, named in ((["--remove-host", "nope"], "no host 'nope'"),
                        (["--host", "nope", "--gpus", "1"], "no host 'nope'"),
                        (["--host", "10.0.0.1"], "--host names the hosts the host options apply to"),
                        (["--lease-dir", "leases"], "--lease-dir must be an absolute path"),
                        (["--remote-root", "jobs"], "--remote-root must be an absolute path"),
                        (["--python", "~/venv/bin/python"], "--python ~/venv/bin/python: a leading ~ is "
                         "not expanded where the job runs; set the full path"),
                        (["--torchrun", "~/venv/bin/torchrun"], "--torchrun ~/venv/bin/torchrun: a "
                         "leading ~")):
        wrong = cli("cluster", "edit", "lab", *args)
        assert wrong.code == 2 and named in wrong.stderr, wrong.output


def test_limit_narrows_the_hosts(cli, nodes, tmp_path):
    inventory = write_yaml(tmp_path / "hosts.yml", nodes, nodes.nodes)
    dry = cli.ok("run", "--dry-run", "-o", "json", "-i", str(inventory), "--limit", "node2:node3", "--",
                 "python", "x.py").json()
    assert [r["host"] for r in dry["ranks"]] == ["node2", "node3"]


@pytest.mark.parametrize("problem", ["missing", "empty group", "limit", "failing script", "bad json",
                                     "gpus many", "bad yaml"])
def test_inventories_a_user_can_get_wrong(cli, nodes, tmp_path, problem):
    inventory = write_yaml(tmp_path / "hosts.yml", nodes, nodes.nodes[:1])
    args = ["-i", str(inventory)]
    expected = {
        "missing": "inventory /nonexistent/hosts.yml does not exist",
        "empty group": "group 'empty' of",
        "limit": "with --limit 'nomatch*'",
        "failing script": "inv.sh",
        "bad json": "inv.sh",
        "gpus many": "tsubmit_gpus must be a whole number",
        "bad yaml": "hosts.yml, line 3: expected",
    }[problem]
    if problem == "missing":
        args = ["-i", "/nonexistent/hosts.yml"]
    elif problem == "empty group":
        inventory.write_text(inventory.read_text() + "    empty:\n      hosts: {}\n")
        args += ["-g", "empty"]
    elif problem == "limit":
        args += ["--limit", "nomatch*"]
    elif problem in ("failing script", "bad json"):
        script = tmp_path / "inv.sh"
        script.write_text("#!/bin/sh\necho boom >&2\nexit 3\n" if problem == "failing script"
                          else "#!/bin/sh\necho '{not json'\n")
        script.chmod(0o755)
        args = ["-i", str(script)]
    elif problem == "gpus many":
        data = yaml.safe_load(inventory.read_text())
        data["all"]["children"]["trainers"]["hosts"]["node1"]["tsubmit_gpus"] = "many"
        inventory.write_text(yaml.safe_dump(data))
    elif problem == "bad yaml":
        inventory.write_text("all:\n  hosts: [unclosed\n")
    run = cli("run", *args, "--", "python", "x.py", cwd=tmp_path)
    assert run.code == 2, run.output
    assert expected in run.stderr, run.stderr
    assert "Traceback" not in run.output and "[WARNING]" not in run.output
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert cli.ok("list", "-o", "json").json() == []


def test_vault_encrypted_variables_need_the_password_file(cli, nodes, workdir, tmp_path):
    import subprocess
    import sys

    password = tmp_path / "vault-pass"
    password.write_text("s3cret-vault\n")
    encrypted = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-vault"), "encrypt_string",
         "--vault-password-file", str(password), "hidden value", "--name", "JOB_SECRET"],
        capture_output=True, text=True, check=True).stdout
    node = nodes.nodes[0]
    host = "\n".join(f"        {k}: {json.dumps(str(v))}" for k, v in nodes.host_vars(node).items())
    secret = "\n".join("          " + line for line in encrypted.strip().splitlines())
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  hosts:\n    {node.name}:\n{host}\n        tsubmit_env:\n{secret}\n")
    command = ["--executor", "distributed", "--wait", "--workdir", str(workdir), "--",
               "python", "-c", "import os; print(os.environ['JOB_SECRET'])"]

    run = cli("run", "-i", str(inventory), "--vault-password-file", str(password), *command)
    assert run.code == 0, run.output
    job = job_id_of(run)
    assert cli.ok("logs", job).stdout == "hidden value\n"
    assert "hidden value" not in run.output

    # Without the password: refused before anything is recorded or sent, naming what needs it.
    without = cli("run", "-i", str(inventory), *command)
    assert without.code == 2, without.output
    assert without.stderr == (f"tsubmit: host {node.name}: tsubmit_env vault-encrypted in the inventory; "
                              "give --vault-password-file FILE or --ask-vault-pass\n")
    assert [j["id"] for j in cli.ok("list", "-o", "json").json()] == [job]


def test_a_worker_behind_a_bastion_runs_and_its_log_follows(cli, nodes, workdir, tmp_path):
    bastion, worker = nodes.nodes[0], nodes.nodes[1]
    hop = (f"ssh -F /dev/null -o UserKnownHostsFile={nodes.known_hosts} -o StrictHostKeyChecking=yes "
           f"-o IdentitiesOnly=yes -i {nodes.identity_file} -p {bastion.port} "
           f"-W {worker.address}:{worker.port} {bastion.user}@{bastion.address}")
    # The worker's name resolves nowhere: only the bastion can reach it.
    behind = {**nodes.host_vars(worker), "ansible_host": "worker.behind-bastion.invalid",
              "tsubmit_rdzv_address": worker.address}
    behind["ansible_ssh_common_args"] += (f" -o ProxyCommand='{hop}'"
                                          f" -o HostKeyAlias=[{worker.address}]:{worker.port}")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {worker.name: behind}}}))
    job = start(cli, "-i", str(inventory), "--executor", "distributed", "--workdir", str(workdir), "--",
                "python", "count.py", "5", "0")
    follow = cli("logs", job, "-f")
    assert follow.code == 0, follow.output
    assert follow.stdout.splitlines() == [f"line {i}" for i in range(5)]


def test_a_python_path_with_a_space_is_one_path(cli, nodes, tmp_path):
    """tsubmit_python is a path, never split into words (the probe runs with it)."""
    node = nodes.nodes[0]
    folder = node.remote_root / f"my env {tmp_path.name}" / "bin"
    folder.mkdir(parents=True)
    (folder / "python").symlink_to(nodes.python)
    cli.write_cluster("c", nodes, [node], tsubmit_python=str(folder / "python"))
    run = cli("run", "-c", "c", "--wait", "--executor", "distributed", "--workdir", str(tmp_path), "--",
              "python", "-c", "import os; print('FIRST', os.environ['PATH'].split(':')[0])")
    assert run.code == 0, run.output
    job = job_id_of(run)
    assert f"FIRST {folder}" in cli.ok("logs", job).stdout


def test_a_spare_is_kept_out_of_the_launch(cli, nodes, workdir, tmp_path):
    spare, b, c = nodes.nodes  # the spare is the inventory's first host: the head moves on
    hosts = {n.name: nodes.host_vars(n) for n in (spare, b, c)}
    hosts[spare.name]["tsubmit_spare"] = True
    path = cli.home / "config" / "clusters" / "withspare.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    shown = cli.ok("cluster", "show", "withspare", "-o", "json").json()
    assert [n["host"] for n in shown["nodes"]] == [b.name, c.name] and shown["spares"] == [spare.name]
    run = cli("run", "-c", "withspare", "--wait", "--executor", "distributed", "--workdir", str(workdir),
              "--", "python3", "show_env.py")
    assert run.code == 0, run.output
    job_id = job_id_of(run)
    job = cli.job(job_id)
    assert [r["host"] for r in job["ranks"]] == [b.name, c.name]
    world_sizes = {json.loads(line.split("ENV ", 1)[1])["WORLD_SIZE"]
                   for line in cli.ok("logs", job_id).stdout.splitlines() if "ENV " in line}
    assert world_sizes == {"2"}
    assert not (spare.remote_root / job_id).exists()
    assert nodes.processes_of(spare, job_id) == []

    # through Ansible's inventory reader too: a group, and the spare flagged as the head
    grouped = tmp_path / "hosts.yml"
    hosts[spare.name]["tsubmit_head"] = True
    grouped.write_text(yaml.safe_dump({"all": {"children": {"trainers": {"hosts": hosts}}}}))
    refused = cli("run", "--dry-run", "-i", str(grouped), "-g", "trainers", "--", "python", "x.py")
    assert refused.code == 2, refused.output
    assert f"host {spare.name} sets both tsubmit_head and tsubmit_spare" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    del hosts[spare.name]["tsubmit_head"]
    for name in (b.name, c.name):
        hosts[name]["tsubmit_spare"] = "yes"
    grouped.write_text(yaml.safe_dump({"all": {"children": {"trainers": {"hosts": hosts}}}}))
    refused = cli("run", "-i", str(grouped), "-g", "trainers", "--workdir", str(workdir), "--", "x")
    assert refused.code == 2 and "is a spare (tsubmit_spare" in refused.stderr, refused.output
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert len(cli.ok("list", "-o", "json").json()) == 1  # the refused run recorded nothing


def test_cluster_add_and_edit_spares(cli):
    cli.ok("cluster", "add", "lab", "--head", "10.0.0.1", "--worker", "10.0.0.2",
           "--spare", "bob@10.0.0.3:2222")
    shown = cli.ok("cluster", "show", "lab", "-o", "json").json()
    assert [n["host"] for n in shown["nodes"]] == ["10.0.0.1", "10.0.0.2"] and shown["spares"] == ["10.0.0.3"]
    assert "spares (kept out of launches): 10.0.0.3" in cli.ok("cluster", "show", "lab").stdout
    cli.ok("cluster", "edit", "lab", "--spare", "10.0.0.2", "--spare", "10.0.0.4")
    shown = cli.ok("cluster", "show", "lab", "-o", "json").json()
    assert [n["host"] for n in shown["nodes"]] == ["10.0.0.1"]
    assert shown["spares"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


@pytest.mark.parametrize("args, message", [
    (["add", "one", "--head", "10.0.0.1", "--spare", "10.0.0.1"],
     "--spare 10.0.0.1 is also given as --head or --worker"),
    (["edit", "lab", "--spare", "10.0.0.1"], "--spare 10.0.0.1: it would leave the cluster no host"),
    (["edit", "lab", "--spare", "bad host"], "bad host"),
])
def test_a_spare_that_leaves_no_host_is_refused(cli, args, message):
    cli.ok("cluster", "add", "lab", "--head", "10.0.0.1")
    before = (cli.home / "config" / "clusters" / "lab.yml").read_text()
    result = cli("cluster", *args)
    assert result.code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (cli.home / "config" / "clusters" / "lab.yml").read_text() == before
    assert not (cli.home / "config" / "clusters" / "one.yml").exists()
