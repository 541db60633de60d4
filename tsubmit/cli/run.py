"""`tsubmit run`."""

import sys
from pathlib import Path

import click


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("-c", "--cluster", "cluster_name", default="local", show_default=True,
              help="A named cluster (see `tsubmit cluster list`).")
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
def run(obj, cluster_name, name, executor, workdir, env_pairs, env_file, gpus, max_restarts,
        dry_run, wait_, follow, all_ranks, timeout, output, command):
    """Ship the working directory to every node of a cluster and start COMMAND there.

    \b
    tsubmit run -- python train.py --lr 0.1
    tsubmit run -c gpus --gpus 8 -- python train.py
    """
    from .. import output as out
    from ..clusters import cluster_ref
    from ..spec import RunRequest, load_env_file, parse_env_pairs, validate_request
    from ..store import open_store
    from ..submit import dry_run as describe
    from ..submit import plan
    from ..views import job_view
    from .jobs import parse_duration, wait_for_job

    timeout_seconds = parse_duration(timeout) if timeout is not None else None
    env = load_env_file(env_file) if env_file else {}
    env.update(parse_env_pairs(env_pairs))
    request = validate_request(RunRequest(
        command=list(command), cluster=cluster_ref(cluster_name), workdir=Path(workdir),
        executor=executor, name=name, env=env, gpus=gpus, max_restarts=max_restarts,
    ))
    the_plan = plan(request)
    if dry_run:
        description = describe(the_plan)
        if output == "json":
            click.echo(out.to_json(description))
        else:
            click.echo(_describe_text(description))
        return
    store = open_store()
    job = _submit(obj, the_plan, request, store)
    if wait_ or follow or timeout_seconds is not None:
        code = wait_for_job(store, job, follow=follow, all_ranks=all_ranks, timeout=timeout_seconds,
                            verbose=obj["verbose"])
        if output == "json":
            click.echo(out.to_json(job_view(job)))
        sys.exit(code)
    if output == "json":
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

    lines = [
        f"head: {description['head']['host']} ({description['head']['reason']})",
        "",
        "# generated inventory (added to " + ", ".join(description["inventory_sources"]) + ")",
        yaml.safe_dump({"tsubmit_nodes": {"hosts": description["inventory"]}}, sort_keys=False),
        "# extra-vars",
        yaml.safe_dump(description["extravars"], sort_keys=False),
    ]
    for rank in description["ranks"]:
        lines += [f"# rank {rank['rank']} on {rank['host']}: command", rank["command"],
                  f"# rank {rank['rank']} on {rank['host']}: environment", rank["environment"], ""]
    return "\n".join(lines).rstrip()
