"""Options shared by commands that target a cluster."""

import contextlib
import os
import sys
import tempfile

import click

from ..errors import UsageError


def resolve_cluster_ref(cluster_name, inventory, group, limit, vault_password_file):
    """-c NAME or -i INVENTORY [-g GROUP], narrowed by --limit; default the local cluster."""
    from ..clusters import LOCAL, cluster_ref, inventory_ref

    if cluster_name and inventory:
        raise UsageError("give either -c/--cluster or -i/--inventory, not both")
    if group and not inventory:
        raise UsageError("-g/--group goes with -i/--inventory (a named cluster has its group)")
    if vault_password_file and not os.path.isfile(vault_password_file):
        raise UsageError(f"vault password file {vault_password_file} does not exist")
    ref = inventory_ref(inventory, group) if inventory else cluster_ref(cluster_name or LOCAL)
    return ref.narrowed(limit, vault_password_file)


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
