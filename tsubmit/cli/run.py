"""`tsubmit run`."""

import sys
from pathlib import Path

import click


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("-c", "--cluster", "cluster_name",
              help="A named cluster (see `tsubmit cluster list`); default: local.")
@click.option("-i", "--inventory", help="An Ansible inventory (file, directory, script or plugin "
              "config) instead of a named cluster.")
@click.option("-g", "--group", help="With -i: the inventory group to run on (default: all).")
@click.option("--limit", help="Only the hosts matching this Ansible pattern.")
@click.option("--vault-password-file", help="Vault password file for the inventory's encrypted "
              "variables (remembered for the job's later commands).")
@click.option("--ask-vault-pass", is_flag=True, help="Prompt for the vault password (not stored).")
@click.option("--name", help="Job name (default: a generated friendly name).")
@click.option("--executor", default="torchrun", show_default=True,
              help="torchrun, or distributed (the command once per node, torch variables set).")
@click.option("--workdir", default=".", show_default=True, help="Directory shipped to every node.")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Environment variable for the job (repeatable).")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML mapping or dotenv file of environment variables (string values).")
@click.option("--gpus", type=int, help="Processes per node (default: the node's tsubmit_gpus, "
              "else its GPU count, else 1).")
@click.option("--max-restarts", type=int, default=0, show_default=True,
              help="Restarts of a failed rank (torchrun's own, or tsubmit's for distributed).")
@click.option("--dry-run", is_flag=True, help="Print the inventory, extra-vars and each rank's "
              "command; run nothing remote.")
@click.option("--wait", "wait_", is_flag=True, help="Block until the job ends; exit 0 if it "
              "succeeded, 1 if not.")
@click.option("--follow", is_flag=True, help="Like --wait, streaming rank 0's log (every rank's "
              "with --all).")
@click.option("--all", "all_ranks", is_flag=True, help="With --follow: stream every rank.")
@click.option("--timeout", help="With --wait: stop the job after this long (e.g. 90m) and exit 1.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(obj, command, **options):
    """Ship the working directory to every node of a cluster and start COMMAND there.

    \b
    tsubmit run -- python train.py --lr 0.1
    tsubmit run -c gpus --gpus 8 -- python train.py
    tsubmit run -i hosts.ini -g trainers -- python train.py
    """
    from .. import output as out
    from ..spec import RunRequest, load_env_file, parse_env_pairs, validate_request
    from ..store import open_store
    from ..submit import dry_run, plan
    from ..views import job_view
    from .jobs import parse_duration, wait_for_job
    from .options import asked_vault_password, resolve_cluster_ref

    timeout = parse_duration(options["timeout"]) if options["timeout"] is not None else None
    env = load_env_file(options["env_file"]) if options["env_file"] else {}
    env.update(parse_env_pairs(options["env_pairs"]))
    with asked_vault_password(options["ask_vault_pass"]) as asked_file:
        ref = resolve_cluster_ref(options["cluster_name"], options["inventory"], options["group"],
                                  options["limit"], asked_file or options["vault_password_file"])
        request = validate_request(RunRequest(
            command=list(command), cluster=ref, workdir=Path(options["workdir"]),
            executor=options["executor"], name=options["name"], env=env, gpus=options["gpus"],
            max_restarts=options["max_restarts"],
        ))
        the_plan = plan(request)
        if asked_file:
            # Asked for, never stored: the temporary file is gone after this command.
            the_plan.job.inventory["vault_password_file"] = None
        if options["dry_run"]:
            description = dry_run(the_plan)
            click.echo(out.to_json(description) if options["output"] == "json"
                       else _describe_text(description))
            return
        store = open_store()
        job = _submit(obj, the_plan, request, store)
    if options["wait_"] or options["follow"] or timeout is not None:
        code = wait_for_job(store, job, follow=options["follow"], all_ranks=options["all_ranks"],
                            timeout=timeout, verbose=obj["verbose"])
        if options["output"] == "json":
            click.echo(out.to_json(job_view(job)))
        sys.exit(code)
    if options["output"] == "json":
        click.echo(out.to_json(job_view(job)))
    else:
        click.echo(f"job {job.id} ({job.name}) running on {len(job.ranks)} node(s) of "
                   f"cluster {job.cluster}")
        click.echo(f"  logs:   tsubmit logs {job.id} -f")
        click.echo(f"  status: tsubmit status {job.id}")
        click.echo(f"  stop:   tsubmit stop {job.id}")


def _submit(obj, the_plan, request, store):
    from .. import output as out
    from ..progress import Progress
    from ..submit import submit

    hosts = [node.name for node in the_plan.cluster.nodes]
    progress = Progress(hosts, live=out.interactive(click.get_text_stream("stderr")))
    return submit(the_plan, request.workdir, store, on_event=progress, verbose=obj["verbose"])


def _describe_text(description: dict) -> str:
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    def dump(value) -> str:
        return yaml.dump(value, Dumper=_NoAliases, sort_keys=False)

    lines = [
        f"head: {description['head']['host']} ({description['head']['reason']})",
        "",
        "# generated inventory (added to " + ", ".join(description["inventory_sources"]) + ")",
        dump({"tsubmit_nodes": {"hosts": description["inventory"]}}),
        "# extra-vars",
        dump(description["extravars"]),
    ]
    for rank in description["ranks"]:
        lines += [f"# rank {rank['rank']} on {rank['host']}: command", rank["command"],
                  f"# rank {rank['rank']} on {rank['host']}: environment", rank["environment"], ""]
    return "\n".join(lines).rstrip()
