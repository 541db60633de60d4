"""Hooks: Ansible task files and roles an inventory or a job adds around a
job's remote steps, run on every node of the job.

- tsubmit_pre_launch_roles, tsubmit_pre_launch_tasks: after the job's tree is
  unpacked and its launch script rendered, before the rank starts;
- tsubmit_post_launch_tasks: after the rank started;
- tsubmit_on_stop_tasks: after the rank's processes were stopped (stop,
  delete, the rollback of a failed launch), before delete removes its files.

Those are inventory variables (per host or group); a job adds its own under
the same names prefixed tsubmit_job_ (tsubmit_job_pre_launch_tasks, ...),
passed as extra-vars, which run after the inventory's.

Task files are absolute paths on the controller (`~` allowed), one path or a
list; roles are names found on the roles path (ansible_env.roles_path()) or
`namespace.collection.role`. A failing hook fails its step: a pre- or
post-launch hook fails the launch, which tsubmit rolls back (exit 3).

The roles and playbooks check the paths themselves (a wrong one fails the
launch). check() does the same on the controller before anything is recorded
or shipped, so a mistake is one line and exit 2.
"""

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError

TASK_FILE_VARIABLES = (
    "tsubmit_pre_launch_tasks",
    "tsubmit_post_launch_tasks",
    "tsubmit_on_stop_tasks",
    "tsubmit_job_pre_launch_tasks",
    "tsubmit_job_post_launch_tasks",
    "tsubmit_job_on_stop_tasks",
)
ROLE_VARIABLES = ("tsubmit_pre_launch_roles", "tsubmit_job_pre_launch_roles")
VARIABLES = TASK_FILE_VARIABLES + ROLE_VARIABLES


def job_extravars(extras: dict) -> dict:
    """A job's own hooks (Job.extras["hooks"], {kind: [...]}) under the names the roles read."""
    return {f"tsubmit_job_{kind}": items for kind, items in extras.get("hooks", {}).items()}


def kinds_used(host_vars: dict[str, dict], extravars: dict) -> set[str]:
    """The hook kinds (pre_launch_roles, post_launch_tasks, ...) that some host
    or the job itself sets."""
    return {name.removeprefix("tsubmit_job_").removeprefix("tsubmit_")
            for name in VARIABLES
            if extravars.get(name) or any(variables.get(name) for variables in host_vars.values())}


def check(host_vars: dict[str, dict], extravars: dict | None = None) -> None:
    """Raise UsageError for the first hook that would fail on some host.

    HOST_VARS maps each node's name to its inventory variables (e.g.
    `{node.name: node.vars for node in cluster.nodes}`); EXTRAVARS are what
    the playbook gets as extra-vars, which win over the inventory's, as in
    Ansible. An inventory's value that is still a template (`{{ inventory_dir
    }}/...`) is left to the roles, which check it once Ansible has rendered
    it; a job's value is data (never rendered), checked as it is.
    """
    extravars = extravars or {}
    check_variables(extravars, templates=False)
    seen: set[tuple[str, str]] = set()
    for host, variables in host_vars.items():
        for name in VARIABLES:
            if name in extravars or name not in variables:
                continue
            key = (name, repr(variables[name]))
            if key not in seen:
                seen.add(key)
                check_variables({name: variables[name]}, where=f"host {host}: ")


def check_variables(variables: dict, where: str = "", *, templates: bool = True) -> None:
    """Check the hook variables among VARIABLES; WHERE prefixes the message.
    TEMPLATES: values holding "{{" are an inventory's templates, left to the roles."""
    for name in TASK_FILE_VARIABLES:
        for path in _values(variables, name, where, templates):
            problem = task_file_problem(path)
            if problem:
                raise UsageError(f"{where}{name}: {path} {problem}")
    for name in ROLE_VARIABLES:
        for role in _values(variables, name, where, templates):
            if not find_role(role):
                raise UsageError(f"{where}{name}: role {role} not found in {_role_search_text(role)}")


def task_file_problem(path: str) -> str | None:
    expanded = Path(path).expanduser()
    if not expanded.is_absolute():
        return "is not an absolute path to a task file on the controller"
    if not expanded.is_file():
        return "does not exist on the controller"
    return None


def find_role(name: str) -> Path | None:
    """Where Ansible will find role NAME for tsubmit's playbooks, or None."""
    if name.count(".") >= 2:  # namespace.collection.role; "user.role" is a Galaxy role
        namespace, collection, role = name.split(".", 2)
        for root in _collection_roots():
            found = root / namespace / collection / "roles" / role
            if found.is_dir():
                return found
        return None
    for folder in _role_folders():
        if (folder / name).is_dir():
            return folder / name
    return None


def _values(variables: dict, name: str, where: str, templates: bool) -> Iterable[str]:
    value = variables.get(name)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(item, str) for item in values):
        kind = "roles" if name in ROLE_VARIABLES else "task file paths"
        raise UsageError(f"{where}{name} must be a list of {kind}, got {value!r}")
    return [item for item in values if not (templates and "{{" in item)]


def _role_folders() -> list[Path]:
    from .ansible_env import playbooks_dir, roles_path

    # Ansible also looks beside the playbook, as the launch role's check does.
    return [*roles_path(), playbooks_dir() / "roles", playbooks_dir()]


def _collection_roots() -> list[Path]:
    """ansible_collections/ folders on the collections path, then on sys.path
    (Ansible scans it too: the `ansible` package installs collections there)."""
    from .ansible_env import collections_path

    roots = []
    for folder in [*collections_path(), *(Path(entry) for entry in sys.path if entry)]:
        root = folder if folder.name == "ansible_collections" else folder / "ansible_collections"
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def _role_search_text(name: str) -> str:
    folders = _collection_roots() if name.count(".") >= 2 else _role_folders()
    return os.pathsep.join(str(folder) for folder in folders)
