"""`tsubmit run`: options and spec files become one job, submitted."""

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import UsageError

_KINDS = {"string": {}, "integer": {"type": int}, "boolean": {"is_flag": True},
          "list": {"multiple": True}, "mapping": {"multiple": True}, "hooks": {"multiple": True}}


def _option(field):
    """The `run` option of a spec key (tsubmit/model/jobspec.py: FIELDS)."""
    settings = dict(_KINDS[field.kind])
    text = field.description
    if settings.get("multiple"):
        text += " Repeatable, or comma-separated." if field.separator else " Repeatable."
    if field.key == "executor":  # click names the choices when one is wrong
        settings["type"] = click.Choice(field.choices)
    if field.default is not None:
        settings.update(default=field.default, show_default=True)
    names = [name for name in (field.short, field.option) if name]
    return click.option(*names, field.key, metavar=field.metavar, help=text, **settings)


def job_options(function):
    """The options that describe a job (each a spec key), for run and export."""
    from ..model import jobspec

    options = [click.option("-f", "--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path),
                            help="A job spec file (YAML); options given here override its keys.")]
    options += [_option(field) for field in jobspec.FIELDS if field.kind != "command"]
    for option in reversed(options):
        function = option(function)
    return function


@click.command(context_settings={"allow_interspersed_args": False})
@job_options
@click.option("--ask-vault-pass", is_flag=True, help="Prompt for the vault password (not stored).")
@click.option("--dry-run", is_flag=True, help="Print the inventory, extra-vars and each rank's "
              "command; run nothing remote.")
@click.option("--print-spec", is_flag=True, help="Print the job spec equivalent to these options.")
@click.option("--all", "all_ranks", is_flag=True, help="With --follow: stream every rank.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--check", "check_mode", is_flag=True, help="Run the submit playbook in Ansible's check "
              "mode with diff: what would be created where; nothing is launched or recorded.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def run(obj, command, **options):
    """Ship the working directory to every node of a cluster and start COMMAND there.

    \b
    tsubmit run -- python train.py --lr 0.1
    tsubmit run -c gpus --gpus 8 -- python train.py
    tsubmit run -i hosts.ini -g trainers -- python train.py
    tsubmit run -f nightly.yaml --if-running skip
    """
    from .. import output as out
    from ..jobs import run as front_door
    from ..jobs.views import job_view
    from ..model import jobspec
    from .options import asked_vault_password

    spec = _spec(options, command)
    if options["print_spec"]:
        click.echo(jobspec.dump(spec), nl=False)
        return
    with asked_vault_password(options["ask_vault_pass"]) as asked_file:
        launch = front_door.dry_run(spec, asked_file)
        if options["dry_run"]:
            description = launch.describe()
            click.echo(out.to_json(description) if options["output"] == "json"
                       else _describe_text(description))
            return
        if options["check_mode"]:
            views = launch.check(verbose=max(obj["verbose"], 1))
            for node in launch.plan.cluster.nodes:
                for part in ("command", "environment"):
                    if part in views.get(node.name, {}):
                        click.echo(f"# rank {node.rank} on {node.name}: {part}\n{views[node.name][part]}")
            click.echo(f"check mode: nothing was launched or recorded on {len(launch.plan.cluster.nodes)} "
                       "node(s)")
            return
        outcome = front_door.run(launch, verbose=obj["verbose"])
    if outcome.skipped_for is not None:
        running = outcome.skipped_for
        if options["output"] == "json":
            click.echo(out.to_json({"skipped": True, "running": job_view(running)}))
        else:
            click.echo(f"job {running.name!r} is running as {running.id}; skipped (--if-running skip)")
        return
    job, store, behaviour = outcome.job, outcome.store, launch.behaviour
    if behaviour.wait:
        from .jobs import wait_for_job

        code = wait_for_job(store, job, follow=behaviour.follow, all_ranks=options["all_ranks"],
                            timeout=behaviour.timeout, verbose=obj["verbose"],
                            summary=options["output"] != "json")
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


def _spec(options: dict, command: tuple[str, ...]) -> dict:
    """The spec file's keys, overridden (or, for some lists, added to) by the
    options given on the command line."""
    from ..model import jobspec

    context = click.get_current_context()
    spec = jobspec.load(options["spec_file"]) if options["spec_file"] else {}
    for field in jobspec.FIELDS:
        if field.kind != "command" and context.get_parameter_source(field.key) == ParameterSource.COMMANDLINE:
            spec[field.key] = _spec_value(field, options[field.key], spec.get(field.key))
    if command:
        spec["command"] = list(command)
    spec["workdir"] = str(Path(spec.get("workdir", ".")).resolve())
    return spec


def _spec_value(field, value, spec_value):
    """An option's value as its spec key holds it, added to SPEC_VALUE where the field says so."""
    from ..jobs.request import parse_env_pairs
    from ..model import jobspec

    base = spec_value if field.adds else None
    if field.kind == "mapping":
        return {**(base or {}), **parse_env_pairs(value)}
    if field.kind == "hooks":
        hooks = {kind: list(items) for kind, items in (base or {}).items()}
        for pair in value:
            kind, sep, item = pair.partition("=")
            if not sep or not item:
                raise UsageError(f"malformed {field.option} {pair!r}: expected KIND=FILE or "
                                 "pre_launch_roles=ROLE")
            item = item if kind.endswith("roles") else str(Path(item).expanduser().resolve())
            jobspec.check_hooks({kind: [item]}, field.option)
            hooks.setdefault(kind, []).append(item)
        return hooks
    if field.kind == "list":
        items = list(value)
        if field.separator:
            items = [part.strip() for item in items for part in item.split(field.separator) if part.strip()]
        return [*(base or []), *items]
    if field.path and value is not None:
        value = str(Path(value).resolve())
    return jobspec.check(field, value, None)


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


@click.command(context_settings={"allow_interspersed_args": False})
@job_options
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def export(command, destination, force, **options):
    """Write a job as a self-contained Ansible project in DESTINATION.

    \b
    tsubmit export -f job.yaml ./job-project
    cd job-project && ansible-playbook -i inventory playbooks/submit.yml -e @extravars.yml
    """
    from ..jobs.run import dry_run

    if command[:1] == ("--",):  # `export DEST -- CMD`: click keeps a `--` that follows DEST
        command = command[1:]
    spec = _spec(options, command)
    launch = dry_run(spec)
    launch.export(destination, force=force)
    click.echo(f"job {launch.job.id} ({launch.job.name}) exported to {destination}; run it with:")
    click.echo(f"  cd {destination} && ansible-playbook -i inventory playbooks/submit.yml -e @extravars.yml")
