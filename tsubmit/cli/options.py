"""Options shared by commands that target a cluster."""

import contextlib
import os
import sys
import tempfile

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
