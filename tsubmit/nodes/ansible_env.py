"""The Ansible environment tsubmit runs in: its own ansible.cfg, roles,
collections and control-path dir, the same for in-process inventory reading
and for every ansible-playbook run, whatever the user's environment says.

Where roles and collections come from, first match wins:

1. the folders of TSUBMIT_ANSIBLE_PATH (colon-separated), so an ops team can
   replace one of tsubmit's roles (a folder `launch/` in one of them) or the
   whole collection (`ansible_collections/tsubmit/cluster/`) and keep the rest;
2. tsubmit's own content: the roles folder beside the playbooks, and the
   collection `tsubmit.cluster` (see collections_path());
3. Ansible's default folders (~/.ansible/roles, ~/.ansible/collections, ...),
   where `ansible-galaxy install` puts roles and collections that hooks use.
"""

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from ..errors import UsageError
from ..paths import ansible_dir, ensure_private_dir, state_dir


def config_file() -> Path:
    chosen = os.environ.get("TSUBMIT_ANSIBLE_CONFIG")
    return Path(chosen) if chosen else ansible_dir() / "ansible.cfg"


def playbooks_dir() -> Path:
    return ansible_dir() / "playbooks"


def playbook(name: str) -> Path:
    return playbooks_dir() / f"{name}.yml"


USER_PATH_VARIABLE = "TSUBMIT_ANSIBLE_PATH"
COLLECTION = "tsubmit.cluster"
# Ansible's own defaults (ansible-config: DEFAULT_ROLES_PATH, COLLECTIONS_PATHS),
# searched after tsubmit's content; only the ones that exist are listed.
_ANSIBLE_ROLES_DEFAULT = ("~/.ansible/roles", "/usr/share/ansible/roles", "/etc/ansible/roles")
_ANSIBLE_COLLECTIONS_DEFAULT = ("~/.ansible/collections", "/usr/share/ansible/collections")


def user_paths() -> list[Path]:
    """The folders of TSUBMIT_ANSIBLE_PATH, absolute, in order; a missing one is a usage error."""
    folders = []
    for entry in os.environ.get(USER_PATH_VARIABLE, "").split(os.pathsep):
        if not entry.strip():
            continue
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{USER_PATH_VARIABLE}: {entry} is not a folder; list folders that hold "
                             "roles or ansible_collections/, separated by ':'")
        folders.append(folder.resolve())  # ansible-playbook runs in another folder
    return folders


def _existing_defaults(folders: tuple[str, ...]) -> list[Path]:
    return [path for path in (Path(f).expanduser() for f in folders) if path.is_dir()]


def roles_path() -> list[Path]:
    """Where Ansible looks for roles, in search order. tsubmit's playbooks name
    their roles by short name (`role: launch`), so a folder of TSUBMIT_ANSIBLE_PATH
    holding `launch/` replaces that role alone."""
    return [*user_paths(), ansible_dir() / "roles", *_existing_defaults(_ANSIBLE_ROLES_DEFAULT)]


def collections_path() -> list[Path]:
    """Where Ansible looks for collections, in search order.

    tsubmit's own folder holds `ansible_collections/tsubmit/cluster/`, so
    `tsubmit.cluster.launch` and the rest resolve with no install step. An
    installed wheel carries that folder as real files (pyproject.toml,
    force-include); a source checkout has it at the top of the repository as a
    few committed symbolic links (galaxy.yml, meta, roles, playbooks, README.md
    -> the sources), so both cases need just ansible_dir() on the path, and
    the roles exist once in the repository.
    """
    return [*(folder for folder in user_paths()
              if folder.name == "ansible_collections" or (folder / "ansible_collections").is_dir()),
            ansible_dir(), *_existing_defaults(_ANSIBLE_COLLECTIONS_DEFAULT)]


def _joined(paths: list[Path]) -> str:
    return os.pathsep.join(str(path) for path in paths)


def _search_path() -> str:
    """PATH with the running interpreter's folder first, so ansible-playbook is
    the one beside tsubmit even when its venv is not activated (cron, a full
    path to tsubmit)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def control_dir() -> Path:
    """Where SSH control sockets live. A socket path is limited to 107 bytes and
    ssh appends a 40-character hash, so a deep state dir falls back to /tmp; so
    does one holding what ssh expands in a ControlPath (`%h`, `${HOME}`): Ansible
    passes the folder on as it is, and makes it with that name."""
    preferred = state_dir() / "cp"
    if len(str(preferred)) <= 60 and "%" not in str(preferred) and "${" not in str(preferred):
        return ensure_private_dir(preferred)
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return ensure_private_dir(Path(tempfile.gettempdir()) / f"tsubmit-cp-{os.getuid()}-{digest}")


# The longest task result tsubmit reads back (one node's answer).
MAX_RESULT_CHARS = 256 * 1024 * 1024


def environment() -> dict[str, str]:
    """Variables set for every Ansible run, overriding the user's."""
    return {
        "PATH": _search_path(),
        "ANSIBLE_CONFIG": str(config_file()),
        # ansible-runner turns host key checking off unless told otherwise.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_ROLES_PATH": _joined(roles_path()),
        "ANSIBLE_COLLECTIONS_PATH": _joined(collections_path()),
        # A stable control path dir lets SSH masters outlive one tsubmit command.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir()),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # An inventory source that cannot be parsed is an error, not an empty cluster.
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        # ansible-runner empties a task's result longer than this (700,000
        # characters by default): a status read bringing back the ends of the
        # ranks' logs (kept_logs), or `logs` reading one, would be lost whole.
        "MAX_EVENT_RES": str(MAX_RESULT_CHARS),
    }


def describe() -> dict:
    """The Ansible tsubmit runs and where its content comes from (`tsubmit ansible-info`)."""
    from importlib.metadata import PackageNotFoundError, version

    from ansible.release import __version__ as ansible_core

    try:
        runner = version("ansible-runner")
    except PackageNotFoundError:
        runner = None
    users = user_paths()
    roles_search, collections_search = roles_path(), collections_path()
    builtin = ansible_dir() / "roles"
    roles = {}
    for role in sorted(entry.name for entry in builtin.iterdir() if entry.is_dir()):
        found = next(folder / role for folder in roles_search if (folder / role).is_dir())
        roles[role] = {"path": str(found), "overridden": found.parent != builtin}
    return {
        "ansible_core": ansible_core,
        "ansible_runner": runner,
        "python": sys.executable,
        "config": {"path": str(config_file()),
                   "source": "TSUBMIT_ANSIBLE_CONFIG" if os.environ.get("TSUBMIT_ANSIBLE_CONFIG")
                   else "tsubmit", "exists": config_file().is_file()},
        "content": str(ansible_dir()),  # tsubmit's playbooks, roles and collection
        "playbooks": str(playbooks_dir()),
        "user_path": [str(folder) for folder in users],
        "roles_path": [str(folder) for folder in roles_search],
        "collections_path": [str(folder) for folder in collections_search],
        "roles": roles,
        "collection": _collection(collections_search),
    }


def collection_dir(search: list[Path] | None = None) -> Path | None:
    """Where Ansible finds tsubmit.cluster on the collections path."""
    namespace, name = COLLECTION.split(".")
    for folder in collections_path() if search is None else search:
        root = folder if folder.name == "ansible_collections" else folder / "ansible_collections"
        if (root / namespace / name).is_dir():
            return root / namespace / name
    return None


def _collection(search: list[Path]) -> dict | None:
    """Where Ansible finds tsubmit.cluster on the collections path, and its version."""
    found = collection_dir(search)
    if found is None:
        return None
    collection_version = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        if (found / "MANIFEST.json").is_file():
            manifest = json.loads((found / "MANIFEST.json").read_text())
            collection_version = manifest["collection_info"]["version"]
        else:
            collection_version = yaml.safe_load((found / "galaxy.yml").read_text())["version"]
    return {"name": COLLECTION, "version": collection_version, "path": str(found)}


def load_inventory(sources: list[str], vault_password_file: str | None = None):
    """Ansible's own view of inventory sources: (InventoryManager, VariableManager)."""
    # Ansible reads its configuration once, when its constants are imported:
    # tsubmit's settings apply then, and the process environment is left as it was.
    settings = environment()
    saved = {key: os.environ.get(key) for key in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY_UNPARSED_FAILED")}
    os.environ.update({key: settings[key] for key in saved})
    try:
        from ansible.errors import AnsibleError
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    for source in sources:
        if "," not in source and not Path(source).exists():
            raise UsageError(f"inventory {source} does not exist")
    loader = DataLoader()
    secret = vault_secret(vault_password_file)
    if secret is not None:
        loader.set_vault_secrets([("default", secret)])
    with quiet():
        try:
            inventory = InventoryManager(loader=loader, sources=sources)
        except AnsibleError as error:
            raise UsageError(_inventory_problem(sources, error)) from None
    return inventory, VariableManager(loader=loader, inventory=inventory)


def quiet():
    """Keep Ansible's in-process warnings (each plugin that declined a source,
    a pattern that matched nothing) off the user's terminal: tsubmit reports
    the problem itself, in one line naming the file or the pattern."""
    return contextlib.redirect_stderr(io.StringIO())


def vault_secret(password_file: str | None):
    if not password_file:
        return None
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import get_file_vault_secret

    if not Path(password_file).is_file():
        raise UsageError(f"vault password file {password_file} does not exist")
    try:  # a file or an executable script, as ansible-playbook accepts
        secret = get_file_vault_secret(filename=password_file, loader=DataLoader())
        secret.load()
    except AnsibleError as error:
        raise UsageError(f"cannot read vault password file {password_file}: {error}") from None
    return secret


def _inventory_problem(sources: list[str], error: Exception) -> str:
    for source in sources:
        if source.endswith((".yml", ".yaml")) and Path(source).is_file():
            try:
                yaml.safe_load(Path(source).read_text())
            except yaml.YAMLError as problem:
                mark = getattr(problem, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark else ""
                reason = getattr(problem, "problem", None) or "not valid YAML"
                return f"cannot read inventory {source}{where}: {reason}"
    first_line = str(error).strip().splitlines()[0]
    return f"cannot read inventory {', '.join(sources)}: {first_line}"
