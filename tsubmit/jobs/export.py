"""`tsubmit export`: a job as a self-contained Ansible project.

The project holds what `tsubmit run` would hand to ansible-playbook: the
cluster's inventory (copied) with the generated ranks beside it, the job's
extra-vars, the playbooks, roles and ansible.cfg, and the archive. It runs as
is with `ansible-playbook -i inventory playbooks/submit.yml -e @extravars.yml`,
from AWX / Automation Platform as a project, or from cron on another machine.
tsubmit does not record an exported job: `tsubmit status` does not know it.

Self-contained: nothing in it names a path of the controller. The job's hook
task files are copied into hooks/ and named relative to the playbooks; the
roles that hooks name (the job's or the inventory's) are copied into roles/
or, for a collection's role, that collection into ansible_collections/; an
inventory file's hook task files under `{{ inventory_dir }}` are copied
beside it. The inventory's own absolute paths stay as they are (it is the
ops team's file): they must exist where the project runs.
"""

import json
import re
import shutil
from pathlib import Path

import yaml

from ..errors import UsageError
from ..nodes import hooks
from ..nodes.ansible_env import ansible_dir, collection_dir, roles_path
from ..nodes.ansible_run import NODES_GROUP, Template, cluster_hosts, vars_yaml
from .launch import pack
from .plan import Plan, extravars

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
- `hooks/`: the job's hook task files, if it has any.
- `playbooks/`, `roles/`, `ansible.cfg`, and `ansible_collections/` (the plugins
  of the collection tsubmit.cluster that the roles use): tsubmit's, as they
  were at export.

tsubmit does not track a job started this way: `tsubmit status` does not know
it; the job's files on each node are under the remote root, in `{id}/`.
"""

# ansible-lint's production profile passes on what tsubmit wrote; the cluster's
# inventory is the ops team's file, copied as it is, not restyled.
_LINT_CONFIG = """---
exclude_paths:
  - archive/
{copies}"""


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
            _copy_inventory_hook_files(path.parent, inventory, [node.vars for node in cluster.nodes])
    (inventory / "tsubmit.yml").write_text(yaml.safe_dump(
        {"all": {"children": {NODES_GROUP: {"hosts": cluster_hosts(cluster, the_plan.host_vars())}}}},
        sort_keys=False))

    variables = extravars(job, archive)
    variables["tsubmit_job_archive"] = Template("{{ playbook_dir }}/../archive/" + archive.path.name)
    variables.update(_copy_job_hook_files(variables, destination / "hooks"))
    _copy_hook_roles(variables, [node.vars for node in cluster.nodes], destination)
    extravars_file = destination / "extravars.yml"
    extravars_file.touch(mode=0o600)
    extravars_file.write_text(vars_yaml(variables))  # the job's strings marked !unsafe

    copies = [f"inventory/{index:02d}-{Path(path).name}" for index, path in enumerate(cluster.ref.sources)]
    (destination / ".ansible-lint").write_text(
        _LINT_CONFIG.format(copies="".join(f"  - {json.dumps(copy)}\n" for copy in copies)))

    vault = " --vault-password-file FILE" if cluster.ref.vault_password_file else ""
    (destination / "README.md").write_text(_README.format(
        name=job.name, id=job.id, group=NODES_GROUP, head=cluster.nodes[0].name, vault=vault))
    return destination


def _copy_roles(target: Path) -> None:
    """tsubmit's roles, each from where tsubmit would take it (TSUBMIT_ANSIBLE_PATH first)."""
    for role in sorted((ansible_dir() / "roles").iterdir()):
        source = next(folder / role.name for folder in roles_path() if (folder / role.name).is_dir())
        shutil.copytree(source, target / role.name, dirs_exist_ok=True)


def _copy_job_hook_files(variables: dict, folder: Path) -> dict:
    """The job's hook task files (absolute paths on the controller) copied into
    FOLDER; returns their variables naming the copies relative to the playbooks,
    as templates that hold only names tsubmit made."""
    renamed = {}
    for name in hooks.TASK_FILE_VARIABLES:
        paths = variables.get(name)
        if not name.startswith("tsubmit_job_") or not paths:
            continue
        copies = []
        for index, path in enumerate([paths] if isinstance(paths, str) else paths):
            source = Path(path).expanduser()
            kind = name.removeprefix("tsubmit_job_")
            copy = f"{kind}-{index:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', source.name)}"
            folder.mkdir(exist_ok=True)
            shutil.copy2(source, folder / copy)
            copies.append(copy)
        listed = ", ".join(f"playbook_dir ~ '/../hooks/{copy}'" for copy in copies)
        renamed[name] = Template("{{ [" + listed + "] }}")
    return renamed


def _copy_inventory_hook_files(inventory_dir: Path, target: Path, host_vars: list[dict]) -> None:
    """An inventory file's hook task files named under `{{ inventory_dir }}`,
    copied to the same place beside the copied inventory."""
    prefix = re.compile(r"^\{\{\s*inventory_dir\s*\}\}/")
    for variables in host_vars:
        for name in hooks.TASK_FILE_VARIABLES:
            value = variables.get(name) or []
            for path in [value] if isinstance(value, str) else value:
                relative = prefix.sub("", path) if isinstance(path, str) and prefix.match(path) else None
                if relative is None or "{{" in relative or ".." in Path(relative).parts:
                    continue
                source = inventory_dir / relative
                if source.is_file() and not (target / relative).exists():
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target / relative)


def _copy_hook_roles(variables: dict, host_vars: list[dict], destination: Path) -> None:
    """The roles hooks name (the job's and the inventory's), where the
    project's ansible.cfg finds them: roles/ and ansible_collections/."""
    own = ansible_dir() / "roles"
    names = set()
    for source in [variables, *host_vars]:
        for name in hooks.ROLE_VARIABLES:
            value = source.get(name) or []
            names.update(role for role in ([value] if isinstance(value, str) else value)
                         if isinstance(role, str) and "{{" not in role)
    for name in sorted(names):
        found = hooks.find_role(name)
        if found is None or found.parent == own:
            continue  # tsubmit's own roles are copied already; a missing one was refused before
        if name.count(".") >= 2:
            namespace, collection, _ = name.split(".", 2)
            target = destination / "ansible_collections" / namespace / collection
            if namespace != "tsubmit" or collection != "cluster":
                shutil.copytree(found.parent.parent, target, dirs_exist_ok=True)
        else:
            shutil.copytree(found, destination / "roles" / name, dirs_exist_ok=True)


def _copy_plugins(target: Path) -> None:
    """The collection's plugins (tsubmit.cluster.run_script), from where tsubmit takes them,
    with the metadata ansible-lint's production profile asks of a collection."""
    source = collection_dir()
    for part in ("galaxy.yml", "meta", "plugins", "README.md", "CHANGELOG.md"):
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        elif (source / part).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)
