"""The client side of the sshd nodes: ssh commands, Ansible host variables and
inventories that reach them (a mixin of SshNodes, which holds the keys and
known_hosts these read)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sshd import Node

SSH = shutil.which("ssh") or "/usr/bin/ssh"
BASTION_ALIAS = "tsubmit-bastion"


class SshCommandError(subprocess.CalledProcessError):
    """A command run over ssh failed; unlike CalledProcessError, str() shows its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, value in (("stdout", self.stdout), ("stderr", self.stderr)):
            if value:
                text += f"\n--- {label} ---\n{value[-4000:].rstrip()}"
        return text


class NodeClients:
    """How tests and tsubmit reach the nodes of an SshNodes."""

    nodes: list[Node]
    base_dir: Path | None
    known_hosts: Path
    identity_file: Path

    def ssh_args(self, node: Node, *, known_hosts: Path | None = None) -> list[str]:
        """argv of an ssh client for the node; append the remote command.

        ``-F /dev/null`` keeps the machine's ssh_config (HashKnownHosts, SendEnv,
        GSSAPI) out of the harness's own calls.
        """
        return [
            SSH,
            "-F", "/dev/null",
            "-p", str(node.port),
            "-l", node.user,
            "-i", str(self.identity_file),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR",
            "--",
            node.address,
        ]  # fmt: skip

    def ssh(
        self,
        node: Node,
        command: str,
        *,
        check: bool = True,
        timeout: float = 30,
        known_hosts: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the node over real ssh as the test user, text output captured."""
        args = [*self.ssh_args(node, known_hosts=known_hosts), command]
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise SshCommandError(result.returncode, args, result.stdout, result.stderr)
        return result

    def host_vars(self, node: Node, *, bastion: Node | None = None,
                  interpreter: bool = True) -> dict[str, str]:
        """Ansible host variables to reach the node (see module docstring for the marker).

        ``bastion``: reach it through that node with ``ProxyJump`` (see
        :meth:`client_config`).  ``interpreter=False`` leaves out
        ``ansible_python_interpreter``, as an ops team's inventory does, so
        Ansible would discover one on the node.
        """
        common = (f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                  "-o IdentitiesOnly=yes")
        if bastion is not None:
            common = f"-F {self.client_config(bastion)} -o ProxyJump={BASTION_ALIAS} {common}"
        host_vars = {
            "ansible_host": node.address,
            "ansible_port": str(node.port),
            "ansible_user": node.user,
            "ansible_ssh_private_key_file": str(self.identity_file),
            # IdentitiesOnly: keys from a developer's ssh-agent would be offered
            # first and could hit sshd's MaxAuthTries.
            "ansible_ssh_common_args": common,
            "ansible_python_interpreter": self.python,
            "tsubmit_python": self.python,
            "tsubmit_remote_root": str(node.remote_root),
            # Test nodes share one machine: each has its own GPU lease folder, so
            # tests never contend for GPUs by accident.
            "tsubmit_gpu_lease_dir": str(node.lease_dir),
        }
        if not interpreter:
            del host_vars["ansible_python_interpreter"]
        return host_vars

    def client_config(self, bastion: Node) -> Path:
        """An ssh_config naming BASTION ``tsubmit-bastion``, for ``-o ProxyJump=tsubmit-bastion``.

        ssh gives the jump connection only its config file (``-F``), none of the
        command line's ``-o`` options, so the bastion's key, user and known_hosts
        must be in a file.
        """
        assert self.base_dir is not None
        path = self.base_dir / f"ssh_config-{bastion.name}"
        path.write_text(
            f"Host {BASTION_ALIAS}\n"
            f"  HostName {bastion.address}\n  Port {bastion.port}\n  User {bastion.user}\n"
            f"  IdentityFile {self.identity_file}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
        )
        path.chmod(0o644)
        return path

    def inventory(self, group: str | None = None, *, members=None) -> dict[str, Any]:
        """A YAML-inventory shaped dict with every node, or only ``members`` (in ``group`` if given)."""
        hosts = {node.name: self.host_vars(node) for node in (self.nodes if members is None else members)}
        if group is None:
            return {"all": {"hosts": hosts}}
        return {"all": {"children": {group: {"hosts": hosts}}}}

    def write_inventory(self, path: Path, group: str | None = None, *, members=None) -> Path:
        import yaml

        path.write_text(yaml.safe_dump(self.inventory(group, members=members), sort_keys=False))
        return path
