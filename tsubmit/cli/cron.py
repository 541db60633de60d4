"""`tsubmit cron ...`: scheduled submissions in the user's crontab."""

import sys
from pathlib import Path

import click


@click.group()
def cron():
    """Schedule job specs with cron (entries in a marked block of your crontab)."""


@cron.command("add")
@click.argument("name")
@click.option("--schedule", required=True, help='A cron expression, e.g. "0 2 * * *", or @daily.')
@click.option("-f", "--spec", "spec_file", required=True, type=click.Path(path_type=Path),
              help="The job spec file to run.")
@click.option("--wait", is_flag=True, help="Wait for the job; the run's exit code is its result.")
@click.option("--if-running", metavar="POLICY", help="allow, skip, replace or fail.")
def add(name, schedule, spec_file, wait, if_running):
    """Add a schedule NAME that runs a job spec."""
    from ..jobs.cron import add as add_entry

    entry = add_entry(name, schedule, spec_file, wait=wait, if_running=if_running)
    click.echo(f"schedule {name} added: {entry['schedule']} runs {entry['spec']}")
    if entry["environment"]:
        click.echo(f"its runs keep {', '.join(sorted(entry['environment']))} as they are set now")


@cron.command("list")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def list_entries(output):
    """List schedules: next run time and last result."""
    from .. import output as out
    from ..jobs.cron import listing

    rows = listing()
    if output == "json":
        click.echo(out.to_json(rows))
        return

    def last(row):
        if row["last_run"] is None:
            return "never"
        return f"exit {row['last_exit_code']}, started {out.timestamp(row['last_run'])}"

    click.echo(out.table(["NAME", "SCHEDULE", "NEXT RUN", "LAST RESULT", "SPEC"],
                         [[r["name"], r["schedule"], r["next_run"] or "at reboot", last(r),
                           r["spec"] or " ".join(r["command"])]
                          for r in rows]))


@cron.command("remove")
@click.argument("name")
def remove(name):
    """Remove schedule NAME from the crontab."""
    from ..jobs.cron import remove as remove_entry

    remove_entry(name)
    click.echo(f"schedule {name} removed")


@cron.command("run")
@click.argument("name")
def run_now(name):
    """Run schedule NAME now, exactly as cron would (bare environment, no terminal)."""
    from ..jobs.cron import run_like_cron

    code, log = run_like_cron(name)
    click.echo(f"schedule {name} exited {code}; its output is in {log}")
    sys.exit(code)


@cron.command("exec", hidden=True)
@click.argument("name")
def execute(name):
    """What a crontab entry runs (records the result)."""
    from ..jobs.cron import execute as execute_entry

    sys.exit(execute_entry(name))
