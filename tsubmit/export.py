"""`tsubmit export`: a job as a self-contained Ansible project.

The project holds what `tsubmit run` would hand to ansible-playbook: the
cluster's inventory (copied) with the generated ranks beside it, the job's
extra-vars, the playbooks, roles and ansible.cfg, and the archive. It runs as
is with `ansible-playbook -i inventory playbooks/submit.yml -e @extravars.yml`,
from AWX / Automation Platform as a project, or from cron on another machine.
tsubmit does not record an exported job: `tsubmit status` does not know it.
"""

import shutil
from pathlib import Path

import yaml

from .ansible_env import ansible_dir, collection_dir, roles_path
from .ansible_run import NODES_GROUP, Template, cluster_hosts, vars_yaml
from .errors import UsageError
from .submit import Plan, extravars, pack

_README = """# tsubmit job {name} ({id}), exported

Run it (from this folder; the SSH settings are the inventory's own):

    ansible-playbook -i inventory playbooks/submit.yml -e @extravars.yml{vault}

Stop it and remove it from the nodes:

    ansible-playbook -i inventory playbooks/stop.yml -e @extravars.yml{vault}
    ansible-playbook -i inventory playbooks/cleanup.yml -e @extravars.yml{vault}

- `inventory/`: the cluster's inventory, and `tsubmit.yml`, which puts its hosts
  in the group `{group}` with their ranks (head first: {head}).
- `extravars.yml` (mode 0600: it holds the job's environment): the job.
- `archive/`: the working directory, named by its content hash.
- `playbooks/`, `roles/`, `ansible.cfg`, and `ansible_collections/` (the plugins
  of the collection tsubmit.cluster that the roles use): tsubmit's, as they
  were at export.

tsubmit does not track a job started this way: `tsubmit status` does not know
it; the job's files on each node are under the remote root, in `{id}/`.
"""


def export(the_plan: Plan, workdir: Path, destination: Path, *, force: bool = False) -> Path:
    if destination.exists() and any(destination.iterdir()) and not force:
        raise UsageError(f"{destination} is not empty; choose an empty folder or give --force")
    destination.mkdir(parents=True, exist_ok=True)
    archive = pack(the_plan, workdir)
    job, cluster = the_plan.job, the_plan.cluster

    (destination / "archive").mkdir(exist_ok=True)
    shutil.copy2(archive.path, destination / "archive" / archive.path.name)
    shutil.copytree(ansible_dir() / "playbooks", destination / "playbooks", dirs_exist_ok=True)
    _copy_roles(destination / "roles")
    _copy_plugins(destination / "ansible_collections" / "tsubmit" / "cluster")
    shutil.copy2(ansible_dir() / "ansible.cfg", destination / "ansible.cfg")

    inventory = destination / "inventory"
    inventory.mkdir(exist_ok=True)
    for index, source in enumerate(cluster.ref.sources):
        path = Path(source)
        target = inventory / f"{index:02d}-{path.name}"
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(path, target)
    (inventory / "tsubmit.yml").write_text(yaml.safe_dump(
        {"all": {"children": {NODES_GROUP: {"hosts": cluster_hosts(cluster, the_plan.host_vars())}}}},
        sort_keys=False))

    variables = extravars(job, archive)
    variables["tsubmit_job_archive"] = Template("{{ playbook_dir }}/../archive/" + archive.path.name)
    extravars_file = destination / "extravars.yml"
    extravars_file.touch(mode=0o600)
    extravars_file.write_text(vars_yaml(variables))  # the job's strings marked !unsafe

    vault = " --vault-password-file FILE" if cluster.ref.vault_password_file else ""
    (destination / "README.md").write_text(_README.format(
        name=job.name, id=job.id, group=NODES_GROUP, head=cluster.nodes[0].name, vault=vault))
    return destination


def _copy_roles(target: Path) -> None:
    """tsubmit's roles, each from where tsubmit would take it (TSUBMIT_ANSIBLE_PATH first)."""
    for role in sorted((ansible_dir() / "roles").iterdir()):
        source = next(folder / role.name for folder in roles_path() if (folder / role.name).is_dir())
        shutil.copytree(source, target / role.name, dirs_exist_ok=True)


def _copy_plugins(target: Path) -> None:
    """The collection's plugins (tsubmit.cluster.run_script), from where tsubmit takes them."""
    source = collection_dir()
    for part in ("galaxy.yml", "meta", "plugins"):
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        elif (source / part).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)
