"""The Ansible environment tsubmit runs in: its own ansible.cfg, roles and
control-path dir, the same for in-process inventory reading and for every
ansible-playbook run, whatever the user's environment says.
"""

import contextlib
import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path

import yaml

from .errors import UsageError
from .paths import ansible_dir, ensure_private_dir, state_dir


def config_file() -> Path:
    chosen = os.environ.get("TSUBMIT_ANSIBLE_CONFIG")
    return Path(chosen) if chosen else ansible_dir() / "ansible.cfg"


def playbook(name: str) -> Path:
    return ansible_dir() / "playbooks" / f"{name}.yml"


def _search_path() -> str:
    """PATH with the running interpreter's folder first, so ansible-playbook is
    the one beside tsubmit even when its venv is not activated (cron, a full
    path to tsubmit)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])


def control_dir() -> Path:
    """Where SSH control sockets live. A socket path is limited to 107 bytes and
    ssh appends a 40-character hash, so a deep state dir falls back to /tmp."""
    preferred = state_dir() / "cp"
    if len(str(preferred)) <= 60:
        return ensure_private_dir(preferred)
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return ensure_private_dir(Path(tempfile.gettempdir()) / f"tsubmit-cp-{os.getuid()}-{digest}")


def environment() -> dict[str, str]:
    """Variables set for every Ansible run, overriding the user's."""
    return {
        "PATH": _search_path(),
        "ANSIBLE_CONFIG": str(config_file()),
        # ansible-runner turns host key checking off unless told otherwise.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_ROLES_PATH": str(ansible_dir() / "roles"),
        # A stable control path dir lets SSH masters outlive one tsubmit command.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir()),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        # An inventory source that cannot be parsed is an error, not an empty cluster.
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    }


def load_inventory(sources: list[str], vault_password_file: str | None = None):
    """Ansible's own view of inventory sources: (InventoryManager, VariableManager)."""
    settings = environment()
    os.environ.update({k: settings[k] for k in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY_UNPARSED_FAILED")})
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

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
