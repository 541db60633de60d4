"""`tsubmit run`: options and spec files become one job, submitted."""

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from .. import executors
from ..errors import UsageError

# click parameter -> spec key (tsubmit/jobspec.py); the command argument is "command".
SPEC_KEYS = {
    "cluster_name": "cluster", "inventory": "inventory", "group": "group", "limit": "limit",
    "vault_password_file": "vault_password_file", "name": "name", "executor": "executor",
    "workdir": "workdir", "env_file": "env_file", "gpus": "gpus", "max_restarts": "max_restarts",
    "keep_going": "keep_going",
    "wait_": "wait", "follow": "follow", "timeout": "timeout", "if_running": "if_running",
    "queue": "queue", "queue_timeout": "queue_timeout",
    "image": "image", "pull": "pull", "study": "study", "direction": "direction",
    "optuna_storage": "optuna_storage", "dashboard": "dashboard", "setup": "setup",
}


_JOB_OPTIONS = [
    click.option("-f", "--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="A job spec file (YAML); options given here override its keys."),
    click.option("-c", "--cluster", "cluster_name",
                 help="A named cluster (see `tsubmit cluster list`); default: local."),
    click.option("-i", "--inventory", help="An Ansible inventory (file, directory, script or plugin "
                 "config) instead of a named cluster."),
    click.option("-g", "--group", help="With -i: the inventory group to run on (default: all)."),
    click.option("--limit", help="Only the hosts matching this Ansible pattern."),
    click.option("--vault-password-file", help="Vault password file for the inventory's encrypted "
                 "variables (remembered for the job's later commands)."),
    click.option("--name", help="Job name (default: a generated friendly name)."),
    click.option("--executor", default=executors.DEFAULT, show_default=True,
                 type=click.Choice(executors.NAMES), help="How the command starts on each node: "
                 + executors.choices_help()),
    click.option("--workdir", default=".", show_default=True, help="Directory shipped to every node."),
    click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
                 help="Environment variable for the job (repeatable)."),
    click.option("--env-file", help="YAML mapping or dotenv file of environment variables (string values)."),
    click.option("--gpus", type=int, help="GPUs leased per node, one process each (default: all of "
                 "the node's: nvidia-smi's, else tsubmit_gpus; 0: none, one process). On a node "
                 "without GPUs: processes per node (default 1)."),
    click.option("--max-restarts", type=int, default=0, show_default=True,
                 help="Restarts of a failed rank (torchrun's own, or tsubmit's for distributed)."),
    click.option("--keep-going", is_flag=True, help="When a rank fails, keep the other ranks "
                 "running (by default tsubmit stops them)."),
    click.option("--if-running", default="allow", show_default=True, metavar="POLICY",
                 help="When a job of this name runs: allow, skip (exit 0), replace (stop it first), "
                 "fail (exit 4)."),
    click.option("--queue", is_flag=True, help="While the GPUs are busy on some node, wait and start "
                 "as soon as every node can lease (default: exit 5)."),
    click.option("--queue-timeout", metavar="DURATION", help="With --queue: give up after this long "
                 "(e.g. 2h) and exit 5."),
    click.option("--image", help="Run each rank's command inside this container image."),
    click.option("--container-arg", "container_args", multiple=True, metavar="ARG",
                 help="Extra argument for the engine's run command (repeatable), e.g. --shm-size=8g."),
    click.option("--pull", default="missing", show_default=True, metavar="POLICY",
                 help="Pull the image: missing, always or never."),
    click.option("--setup", metavar="CMD", help="Run CMD (sh -c) on every node before the rank "
                 "starts, in the workdir, with the job's environment; skipped on a node where it "
                 "already succeeded with the same inputs. $TSUBMIT_SETUP_DIR is its folder there; a "
                 "venv at $TSUBMIT_SETUP_DIR/venv goes first on the rank's PATH."),
    click.option("--setup-key", "setup_keys", multiple=True, metavar="FILE",
                 help="A file (relative to the workdir) whose content the setup's cache follows "
                 "(repeatable; default: requirements*.txt, pyproject.toml, uv.lock, environment.yml, "
                 "setup.py in the workdir)."),
    click.option("--study", help="With --executor optuna: the study (default: the job name); "
                 "running again with the same study continues it."),
    click.option("--direction", help="With --executor optuna: minimize (default) or maximize."),
    click.option("--optuna-storage", help="With --executor optuna: a database URL or a name from "
                 "`tsubmit db list` instead of the SQLite store on the head."),
    click.option("--dashboard", is_flag=True, help="With --executor optuna: start optuna-dashboard on "
                 "the head (see `tsubmit optuna dashboard JOB`)."),
    click.option("--hook", "hook_pairs", multiple=True, metavar="KIND=FILE|ROLE",
                 help="A hook on every node (repeatable): pre_launch_tasks, post_launch_tasks or "
                 "on_stop_tasks with a task file; pre_launch_roles with a role."),
    click.option("--notify", "notify_urls", multiple=True, metavar="URL",
                 help="Tell this apprise URL when the job succeeds, fails, or starts after waiting "
                 "in the queue (repeatable): ntfy://topic, mailto://user:pass@example.com, "
                 "slack://..., json://host:port/path, ... (default: notify in the config file)."),
    click.option("--notify-on", "notify_events", multiple=True, metavar="EVENTS",
                 help="Only these events (comma-separated or repeated): started, succeeded, failed, "
                 "end (both ends). Default: all."),
    click.option("--wait", "wait_", is_flag=True, help="Block until the job ends; exit 0 if it "
                 "succeeded, 1 if not."),
    click.option("--follow", is_flag=True, help="Like --wait, streaming rank 0's log (every rank's "
                 "with --all)."),
    click.option("--timeout", help="With --wait: stop the job after this long (e.g. 90m) and exit 1."),
]


def job_options(function):
    """The options that describe a job (each is also a spec key), for run and export."""
    for option in reversed(_JOB_OPTIONS):
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
    from .. import jobspec
    from .. import output as out
    from .. import run as front_door
    from ..views import job_view
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
    """The spec file's keys, overridden by the options given on the command line."""
    from .. import jobspec
    from ..spec import parse_env_pairs

    context = click.get_current_context()
    spec = jobspec.load(options["spec_file"]) if options["spec_file"] else {}
    for param, key in SPEC_KEYS.items():
        if context.get_parameter_source(param) == ParameterSource.COMMANDLINE:
            value = options[param]
            if jobspec.BY_KEY[key].path and value is not None:
                value = str(Path(value).resolve())
            spec[key] = jobspec.check(jobspec.BY_KEY[key], value, None)
    for pair in options["hook_pairs"]:
        kind, sep, item = pair.partition("=")
        if not sep or not item:
            raise UsageError(f"malformed --hook {pair!r}: expected KIND=FILE or pre_launch_roles=ROLE")
        item = item if kind.endswith("roles") else str(Path(item).expanduser().resolve())
        merged = jobspec.check_hooks({kind: [item]}, "--hook")
        spec.setdefault("hooks", {}).setdefault(kind, []).extend(merged[kind])
    if options["container_args"]:
        spec["container_args"] = [*spec.get("container_args", []), *options["container_args"]]
    if options["setup_keys"]:
        spec["setup_key"] = [*spec.get("setup_key", []), *options["setup_keys"]]
    if options["notify_urls"]:
        spec["notify"] = list(options["notify_urls"])
    if options["notify_events"]:
        spec["notify_on"] = [event.strip() for item in options["notify_events"]
                             for event in item.split(",") if event.strip()]
    if options["env_pairs"]:
        spec["env"] = {**spec.get("env", {}), **parse_env_pairs(options["env_pairs"])}
    if command:
        spec["command"] = list(command)
    spec["workdir"] = str(Path(spec.get("workdir", ".")).resolve())
    return spec


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
    from ..run import dry_run

    if command[:1] == ("--",):  # `export DEST -- CMD`: click keeps a `--` that follows DEST
        command = command[1:]
    spec = _spec(options, command)
    launch = dry_run(spec)
    launch.export(destination, force=force)
    click.echo(f"job {launch.job.id} ({launch.job.name}) exported to {destination}; run it with:")
    click.echo(f"  cd {destination} && ansible-playbook -i inventory playbooks/submit.yml -e @extravars.yml")
