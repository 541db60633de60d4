"""`tsubmit cluster check`."""

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import EXIT_LAUNCH, UsageError

MARKS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skipped": "-"}


@click.command("check")
@click.argument("name", required=False)
@click.option("-i", "--inventory", metavar="PATH",
              help="An Ansible inventory instead of a named cluster.")
@click.option("-g", "--group", metavar="GROUP", help="With -i: the group of the cluster's hosts "
              "(default: all).")
@click.option("--vault-password-file", metavar="FILE",
              help="Vault password file for the inventory's encrypted values.")
@click.option("--ask-vault-pass", is_flag=True, help="Prompt for the vault password (not stored).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def check(obj, name, inventory, group, vault_password_file, ask_vault_pass, output):
    """Check that every node of cluster NAME (or of -i PATH) can run jobs.

    SSH, python, torchrun and its torch version, GPUs against tsubmit_gpus,
    free space in the remote root, clock skew, each worker's TCP connection to
    the head's rendezvous address, and the container engine when one is
    declared: one playbook run, all nodes in parallel. Exit 0 when nothing
    failed (warnings allowed), 3 otherwise.

    \b
    tsubmit cluster check gpus
    tsubmit cluster check -i hosts.yml -g trainers -o json
    """
    from .. import output as out
    from ..check import CHECKS, check_cluster

    with resolved_cluster(name, inventory, group, vault_password_file, ask_vault_pass) as cluster:
        report = check_cluster(cluster, verbose=(obj or {}).get("verbose", 0))

    if output == "json":
        click.echo(out.to_json(report.as_dict()))
    else:
        declared = any(checks["container"].status != "skipped" for checks in report.hosts.values())
        columns = [c for c in CHECKS if c != "container" or declared]
        rows = [[host, *(MARKS[checks[c].status] for c in columns)]
                for host, checks in report.hosts.items()]
        click.echo(out.table(["HOST", *(c.upper() for c in columns)], rows))
        # Who leases each node's GPUs now (the gpus check's detail, every user's jobs).
        leased = [(host, checks["gpus"].detail) for host, checks in report.hosts.items()
                  if checks["gpus"].status == "ok" and " free" in checks["gpus"].detail]
        if leased:
            click.echo("")
        for host, detail in leased:
            click.echo(f"gpus {host}: {detail}")
        problems = report.problems()
        if problems:
            click.echo("")
        for host, check_name, outcome in problems:
            click.echo(f"{MARKS[outcome.status]} {host} {check_name}: {outcome.detail}")
            if outcome.remedy:
                click.echo(f"     -> {outcome.remedy}")
        failures, warnings = report.count("fail"), report.count("warn")
        hosts = len(report.hosts)
        if failures or warnings:
            click.echo(f"\n{failures} failure(s), {warnings} warning(s) on {hosts} host(s)")
        else:
            click.echo(f"\nall checks passed on {hosts} host(s)")
    if not report.ok:
        sys.exit(EXIT_LAUNCH)


@contextmanager
def resolved_cluster(name, inventory, group, vault_password_file, ask_vault_pass):
    """The cluster NAME, or -i INVENTORY [-g GROUP], resolved while an asked vault
    password lives (`cluster check`, `cluster usage`)."""
    from ..clusters import resolve, select_cluster
    from .options import asked_vault_password

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
