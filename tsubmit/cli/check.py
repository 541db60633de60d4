"""`tsubmit cluster check`."""

import sys

import click

from ..errors import EXIT_LAUNCH
from .options import cluster_options, resolved_cluster

MARKS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skipped": "-"}


@click.command("check")
@cluster_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--fix", is_flag=True,
              help="First make each node's shared GPU lease folder (tsubmit_gpu_lease_dir) owned by "
                   "root, mode 1777, as root: the node's user must be allowed to become root.")
@click.pass_obj
def check(obj, name, inventory, group, vault_password_file, ask_vault_pass, output, fix):
    """Check that every node of cluster NAME (or of -i PATH) can run jobs.

    SSH, python, torchrun and its torch version, GPUs against tsubmit_gpus,
    free space in the remote root, clock skew, each worker's TCP connection to
    the head's rendezvous address, and the container engine when one is
    declared, and each node's GPU lease folder (shared by every user and
    nobody's but root's, else a warning or a failure): one playbook run, all
    nodes in parallel. Exit 0 when nothing failed (warnings allowed), 3 otherwise.

    \b
    tsubmit cluster check gpus
    tsubmit cluster check -i hosts.yml -g trainers -o json
    tsubmit cluster check gpus --fix
    """
    from .. import output as out
    from ..nodes.cluster_check import CHECKS, check_cluster

    with resolved_cluster(name, inventory, group, vault_password_file, ask_vault_pass) as cluster:
        report = check_cluster(cluster, fix=fix, verbose=(obj or {}).get("verbose", 0))

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
