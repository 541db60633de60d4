"""`tsubmit cluster ...`: clusters are Ansible inventories."""

import sys

import click

from ..errors import UsageError
from .options import cluster_options


@click.group()
def cluster():
    """Add, list, show and remove clusters (Ansible inventories)."""


def _rdzv_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    addresses = {}
    for pair in pairs:
        host, sep, address = pair.partition("=")
        if not sep or not host or not address:
            raise UsageError(f"malformed --rdzv-address {pair!r}: expected HOST=ADDRESS")
        addresses[host] = address
    return addresses


_host_options = [
    click.option("--gpus", type=int, help="Processes per node (tsubmit_gpus)."),
    click.option("--identity-file", help="SSH private key (ansible_ssh_private_key_file)."),
    click.option("--rdzv-address", "rdzv_addresses", multiple=True, metavar="HOST=ADDR",
                 help="Address other nodes use to reach HOST (tsubmit_rdzv_address)."),
    click.option("--python", help="Python on the nodes: a name on PATH, or a full path such as a "
                                  "venv's (tsubmit_python)."),
    click.option("--torchrun", help="torchrun on the nodes: a name on PATH, or a full path "
                                    "(tsubmit_torchrun)."),
    click.option("--lease-dir", metavar="DIR",
                 help="The folder of the node's GPU leases, one per machine (tsubmit_gpu_lease_dir; "
                      "default /dev/shm/tsubmit-gpu-leases)."),
    click.option("--remote-root", metavar="DIR",
                 help="Where jobs live on the node (tsubmit_remote_root; default ~/.tsubmit/jobs)."),
]


def host_options(function):
    for option in reversed(_host_options):
        function = option(function)
    return function


@cluster.command("add")
@click.argument("name")
@click.option("--head", required=True, metavar="[USER@]HOST[:PORT]", help="The head node (rank 0).")
@click.option("--worker", "workers", multiple=True, metavar="[USER@]HOST[:PORT]",
              help="A worker node (repeatable; ranks follow this order).")
@click.option("--spare", "spares", multiple=True, metavar="[USER@]HOST[:PORT]",
              help="A spare node, kept out of launches (tsubmit_spare; repeatable).")
@host_options
def add(name, head, workers, spares, gpus, identity_file, rdzv_addresses, python, torchrun, lease_dir,
        remote_root):
    """Write cluster NAME as a YAML inventory, head first; the host options apply to every host."""
    from ..nodes.clusters import write_cluster

    path = write_cluster(name, head, list(workers), gpus=gpus, identity_file=identity_file,
                         rdzv_addresses=_rdzv_pairs(rdzv_addresses), python=python,
                         torchrun=torchrun, spares=list(spares), lease_dir=lease_dir,
                         remote_root=remote_root)
    click.echo(f"cluster {name} written to {path}")


@cluster.command("create")
@click.argument("name", required=False)
def create(name):
    """Prompt for a cluster's fields (on a terminal) and write it."""
    from ..nodes.clusters import write_cluster

    if not sys.stdin.isatty():
        raise UsageError("cluster create prompts for its fields; without a terminal use "
                         "`tsubmit cluster add NAME --head HOST [--worker HOST]...`")
    name = name or click.prompt("Cluster name")
    head = click.prompt("Head node ([USER@]HOST[:PORT])")
    workers = []
    while worker := click.prompt("Worker node (empty to finish)", default="", show_default=False):
        workers.append(worker)
    gpus = click.prompt("GPUs per node (empty: detect)", default="", show_default=False)
    identity = click.prompt("SSH identity file (empty: ssh's default)", default="",
                            show_default=False)
    python = click.prompt("Python on the nodes (empty: python3 on PATH)", default="",
                          show_default=False)
    path = write_cluster(name, head, workers, gpus=int(gpus) if gpus.strip() else None,
                         identity_file=identity or None, python=python or None)
    click.echo(f"cluster {name} written to {path}")


@cluster.command("import")
@click.argument("name")
@click.option("-i", "--inventory", required=True, help="The existing inventory (any kind Ansible reads).")
@click.option("-g", "--group", default="all", show_default=True,
              help="The group whose hosts are the cluster.")
@click.option("--vault-password-file", metavar="FILE",
              help="Vault password file for the inventory's encrypted values; its path (not the "
                   "password) is kept for the cluster's later commands.")
@click.option("--ask-vault-pass", is_flag=True, help="Prompt for the vault password (not stored).")
def import_(name, inventory, group, vault_password_file, ask_vault_pass):
    """Register an existing inventory as cluster NAME, by reference (the file stays the source of truth)."""
    from ..nodes.clusters import import_cluster
    from .options import asked_vault_password

    if vault_password_file and ask_vault_pass:
        raise UsageError("give either --vault-password-file or --ask-vault-pass, not both")
    with asked_vault_password(ask_vault_pass) as asked_file:
        import_cluster(name, inventory, group, vault_password_file=asked_file or vault_password_file,
                       keep_vault_password_file=asked_file is None)
    click.echo(f"cluster {name} imported from {inventory} (group {group})")


@cluster.command("list")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def list_clusters(output):
    """List clusters: their source, inventory, group and hosts in rank order."""
    from .. import output as out
    from ..errors import TsubmitError
    from ..nodes.clusters import cluster_names, cluster_ref, cluster_source, resolve

    rows = []
    for name in cluster_names():
        ref = cluster_ref(name)
        try:
            hosts = [node.name for node in resolve(ref).nodes]
            problem = None
        except TsubmitError as error:
            hosts, problem = [], str(error)
        rows.append({"name": name, "source": cluster_source(name), **ref.as_dict(),
                     "hosts": hosts, "error": problem})
    if output == "json":
        click.echo(out.to_json(rows))
        return
    click.echo(out.table(
        ["NAME", "SOURCE", "INVENTORY", "GROUP", "HOSTS"],
        [[r["name"], r["source"], ", ".join(r["sources"]), r["group"],
          ", ".join(r["hosts"]) or f"error: {r['error']}"] for r in rows]))


@cluster.command("show")
@click.argument("name")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def show(name, output):
    """Show a cluster's hosts in rank order."""
    from .. import output as out
    from ..nodes.clusters import cluster_ref, cluster_source, resolve

    resolved = resolve(cluster_ref(name))
    rows = [{"rank": n.rank, "host": n.name, "address": n.address,
             "gpus": n.gpus if n.gpus is not None else "detect"} for n in resolved.nodes]
    if output == "json":
        click.echo(out.to_json({"name": name, "source": cluster_source(name), **resolved.ref.as_dict(),
                                "head_reason": resolved.head_reason, "nodes": rows,
                                "spares": resolved.spares}))
        return
    click.echo(f"cluster {name} ({cluster_source(name)}): {', '.join(resolved.ref.sources)} "
               f"(group {resolved.ref.group})")
    click.echo(f"head: {resolved.nodes[0].name} ({resolved.head_reason})")
    click.echo(out.table(["RANK", "HOST", "ADDRESS", "GPUS"], [list(r.values()) for r in rows]))
    if resolved.spares:
        click.echo(f"spares (kept out of launches): {', '.join(resolved.spares)}")


@cluster.command("edit")
@click.argument("name")
@click.option("--add-worker", "add_workers", multiple=True, metavar="[USER@]HOST[:PORT]",
              help="Add a worker at the end (repeatable).")
@click.option("--remove-host", "remove_hosts", multiple=True, metavar="HOST",
              help="Remove a host by its inventory name (repeatable).")
@click.option("--spare", "spares", multiple=True, metavar="HOST",
              help="Make a host of the cluster (its inventory name) a spare, kept out of launches "
                   "(tsubmit_spare), or add a new [USER@]HOST[:PORT] as one (repeatable).")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Apply the host options to this host only, by its inventory name (repeatable).")
@host_options
def edit(name, add_workers, remove_hosts, spares, hosts, gpus, identity_file, rdzv_addresses, python,
         torchrun, lease_dir, remote_root):
    """Change a cluster tsubmit wrote (flags, or prompts on a terminal when none are given).

    The host options (--gpus, --python, --lease-dir, ...) apply to the hosts named
    with them, --add-worker's and --host's, when there are any; else to every host
    of the cluster.

    \b
    tsubmit cluster edit gpus --add-worker gpu9 --gpus 2      # gpu9 has 2 GPUs, the others keep theirs
    tsubmit cluster edit gpus --host gpu3 --lease-dir /dev/shm/leases-gpu3
    tsubmit cluster edit gpus --python /opt/venv/bin/python   # every host
    """
    from ..nodes.clusters import edit_cluster, read_cluster

    changes = {"add_workers": list(add_workers), "remove_hosts": list(remove_hosts),
               "spares": list(spares), "gpus": gpus,
               "identity_file": identity_file, "rdzv_addresses": _rdzv_pairs(rdzv_addresses),
               "python": python, "torchrun": torchrun, "lease_dir": lease_dir,
               "remote_root": remote_root}
    host_values = [value for key, value in changes.items()
                   if key not in ("add_workers", "remove_hosts", "spares")]
    if hosts and not any(host_values):
        raise UsageError("--host names the hosts the host options apply to: give one, such as --gpus")
    if not any(changes.values()):
        if not sys.stdin.isatty():
            raise UsageError("nothing to change: give flags such as --add-worker or --gpus "
                             "(prompts need a terminal)")
        changes = _prompt_changes(read_cluster(name))
    path = edit_cluster(name, **changes, hosts=list(hosts))
    click.echo(f"cluster {name} updated in {path}")


def _prompt_changes(current: dict) -> dict:
    def ask(label, value):
        answer = click.prompt(label, default=value or "", show_default=bool(value))
        return answer or None

    gpus = ask("GPUs per node (empty: detect)", current["gpus"])
    return {
        "add_workers": [w for w in [ask("Add a worker (empty: none)", None)] if w],
        "remove_hosts": [h for h in [ask(f"Remove a host ({', '.join(current['hosts'])}; empty: none)",
                                         None)] if h],
        "gpus": int(gpus) if gpus else None,
        "identity_file": ask("SSH identity file", current["identity_file"]),
        "rdzv_addresses": {},
        "python": ask("Python on the nodes", current["python"]),
        "torchrun": ask("torchrun on the nodes", current["torchrun"]),
    }


@cluster.command("remove")
@click.argument("name")
def remove(name):
    """Remove cluster NAME (its inventory file)."""
    from ..nodes.clusters import remove_cluster

    remove_cluster(name)
    click.echo(f"cluster {name} removed")


@cluster.command("usage")
@cluster_options
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def usage(obj, name, inventory, group, vault_password_file, ask_vault_pass, output):
    """Per node: GPUs, how many are free, and who leases the others (every user's jobs).

    Read from the nodes' lease folders (tsubmit_gpu_lease_dir), so it shows the
    jobs of every user and controller, not only this one's. Exit 3 when a node
    cannot be read.

    \b
    tsubmit cluster usage gpus
    tsubmit cluster usage -i hosts.yml -g trainers -o json
    """
    from .. import output as out
    from ..errors import EXIT_LAUNCH
    from ..nodes.gpu_leases import describe_lease
    from ..nodes.gpu_leases import usage as read_usage
    from .options import resolved_cluster

    with resolved_cluster(name, inventory, group, vault_password_file, ask_vault_pass) as resolved:
        nodes = read_usage(resolved, verbose=(obj or {}).get("verbose", 0))
    if output == "json":
        click.echo(out.to_json([node.as_dict() for node in nodes]))
    else:
        rows = []
        for node in nodes:
            if node.report is None:
                rows.append([node.host, "-", "-", f"cannot read: {node.error}"])
                continue
            leases = node.report["leases"]
            rows.append([node.host, len(node.report["gpus"]), len(node.report["free"]),
                         describe_lease(leases[0]) if leases else "-"])
            rows += [["", "", "", describe_lease(lease)] for lease in leases[1:]]
        click.echo(out.table(["HOST", "GPUS", "FREE", "LEASES"], rows))
        for node in nodes:
            if node.report is not None and node.report.get("note"):
                click.echo(f"{node.host}: {node.report['note']}", err=True)
    if any(node.report is None for node in nodes):
        sys.exit(EXIT_LAUNCH)


from .check import check  # noqa: E402, I001
cluster.add_command(check)
