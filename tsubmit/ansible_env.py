"""The Ansible environment tsubmit runs in: its own ansible.cfg, roles and
control-path dir, the same for in-process inventory reading and for every
ansible-playbook run, whatever the user's environment says.
"""

import hashlib
import os
import sys
import tempfile
from pathlib import Path

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
    }


def load_inventory(sources: list[str]):
    """Ansible's own view of inventory sources: (InventoryManager, VariableManager)."""
    os.environ.update({k: v for k, v in environment().items() if k == "ANSIBLE_CONFIG"})
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    for source in sources:
        if "," not in source and not Path(source).exists():
            raise UsageError(f"inventory {source} does not exist")
    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=sources)
    except AnsibleError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UsageError(f"cannot read inventory {', '.join(sources)}: {first_line}") from None
    return inventory, VariableManager(loader=loader, inventory=inventory)
