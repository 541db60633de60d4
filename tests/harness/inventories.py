"""An ops team's inventory of the harness nodes, as unkind as real ones.

What issue 16 met at a real site, in one directory:

```
ops/
  hosts.ini                 [trainers] node1 node2 node3 (inventory order)
  group_vars/all.yml        the connection settings, a ProxyJump through the
                            bastion, and a top-level vaulted variable
  group_vars/trainers.yml   tsubmit_python, tsubmit_env with a vaulted value
                            and a template of the vaulted variable
  host_vars/nodeN.yml       each node's address, port and remote root; the
                            head (tsubmit_head: true) is the highest address
```

No ``ansible_python_interpreter`` anywhere: Ansible would discover one on
the node, and the nodes' PATH starts with a stale ``python3.13`` shim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .sshd import Node, SshNodes

GROUP = "trainers"
VAULT_PASSWORD = "harness-vault-password"
# The clear values of the vaulted variables, which no output may show.
SECRETS = {"site_token": "site-token-8d1f7e", "db_password": "db-password-41c9a2"}


@dataclass
class OpsInventory:
    path: Path  # the inventory directory, for -i
    vault_password_file: Path
    members: list[Node]  # inventory order
    head: Node  # tsubmit_head: true, not the lowest address
    bastion: Node
    secrets: dict[str, str] = field(default_factory=lambda: dict(SECRETS))

    @property
    def group(self) -> str:
        return GROUP

    def rank_order(self) -> list[Node]:
        """The order tsubmit gives the ranks: the head, then inventory order."""
        return [self.head, *(node for node in self.members if node is not self.head)]


def vault_encrypt(value: str, password: str = VAULT_PASSWORD) -> str:
    """VALUE as the `$ANSIBLE_VAULT;1.1;AES256` text `ansible-vault encrypt_string` prints."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([("default", VaultSecret(password.encode()))]).encrypt(value).decode()


def _vaulted(value: str, indent: int) -> str:
    pad = " " * indent
    return "!vault |\n" + "".join(f"{pad}{line}\n" for line in vault_encrypt(value).splitlines())


def write_ops_inventory(directory: Path, nodes: SshNodes, members: list[Node], bastion: Node,
                        *, head: Node | None = None) -> OpsInventory:
    """Write the inventory directory (see the module docstring); the head defaults to the
    member with the highest address, so that it is not the lowest."""
    head = head or max(members, key=lambda node: tuple(int(part) for part in node.address.split(".")))
    directory.mkdir(parents=True)
    (directory / "group_vars").mkdir()
    (directory / "host_vars").mkdir()
    password_file = directory.parent / f"{directory.name}-vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    password_file.chmod(0o600)

    (directory / "hosts.ini").write_text(
        f"# the trainers, in the order an ops team keeps them\n[{GROUP}]\n"
        + "".join(f"{node.name}\n" for node in members))
    connection = nodes.host_vars(members[0], bastion=bastion, interpreter=False)
    shared = {key: connection[key] for key in ("ansible_user", "ansible_ssh_private_key_file",
                                               "ansible_ssh_common_args")}
    (directory / "group_vars" / "all.yml").write_text(
        "---\n" + yaml.safe_dump(shared, sort_keys=False)
        + f"site_token: {_vaulted(SECRETS['site_token'], 2)}")
    (directory / "group_vars" / f"{GROUP}.yml").write_text(
        "---\n" + yaml.safe_dump({"tsubmit_python": connection["tsubmit_python"]})
        + "tsubmit_env:\n"
        + "  SITE_TOKEN: \"{{ site_token }}\"\n"
        + f"  DB_PASSWORD: {_vaulted(SECRETS['db_password'], 4)}")
    for node in members:
        own = nodes.host_vars(node, interpreter=False)
        values = {key: own[key] for key in ("ansible_host", "ansible_port", "tsubmit_remote_root",
                                              "tsubmit_gpu_lease_dir")}
        if node is head:
            values["tsubmit_head"] = True
        (directory / "host_vars" / f"{node.name}.yml").write_text(
            "---\n" + yaml.safe_dump(values, sort_keys=False))
    return OpsInventory(directory, password_file, list(members), head, bastion)
