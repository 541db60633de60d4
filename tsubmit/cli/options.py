"""Options shared by commands that target a cluster."""

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import click

from ..errors import UsageError


@contextlib.contextmanager
def asked_vault_password(ask: bool):
    """With --ask-vault-pass: the password, prompted on the terminal, in a 0600
    file that exists only while the command runs (ansible-playbook reads it)."""
    if not ask:
        yield None
        return
    if not sys.stdin.isatty():
        raise UsageError("--ask-vault-pass needs a terminal; use --vault-password-file instead")
    password = click.prompt("Vault password", hide_input=True)
    with tempfile.NamedTemporaryFile("w", prefix="tsubmit-vault-", delete=False) as handle:
        os.chmod(handle.name, 0o600)
        handle.write(password + "\n")
    try:
        yield handle.name
    finally:
        os.unlink(handle.name)


def cluster_options(command):
    """NAME or -i PATH [-g GROUP] and the vault options: what a command that reads
    a cluster's nodes without running a job takes (`cluster check`, `cluster usage`)."""
    for option in reversed([
        click.argument("name", required=False),
        click.option("-i", "--inventory", metavar="PATH",
                     help="An Ansible inventory instead of a named cluster."),
        click.option("-g", "--group", metavar="GROUP",
                     help="With -i: the group of the cluster's hosts (default: all)."),
        click.option("--vault-password-file", metavar="FILE",
                     help="Vault password file for the inventory's encrypted values."),
        click.option("--ask-vault-pass", is_flag=True, help="Prompt for the vault password (not stored)."),
    ]):
        command = option(command)
    return command


@contextlib.contextmanager
def resolved_cluster(name, inventory, group, vault_password_file, ask_vault_pass):
    """The cluster NAME, or -i INVENTORY [-g GROUP], resolved while an asked vault
    password lives (`cluster check`, `cluster usage`)."""
    from ..nodes.clusters import resolve, select_cluster

    # Unlike run, check and usage have no default cluster: they name what they read.
    if (name is None) == (inventory is None):
        raise UsageError("give either a cluster NAME or -i PATH (an inventory), not both")
    if vault_password_file and ask_vault_pass:
        raise UsageError("give either --vault-password-file or --ask-vault-pass, not both")
    ref = select_cluster(name, inventory, group, None, vault_password_file)
    with asked_vault_password(ask_vault_pass) as asked_file:
        password_file = asked_file or vault_password_file
        if password_file:
            # Absolute, as run's: ansible-playbook runs in another folder than this command.
            ref = ref.narrowed(None, str(Path(password_file).resolve()))
        yield resolve(ref)
