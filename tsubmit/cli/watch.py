"""`tsubmit watch`: refresh the jobs nobody waits for, so they are acted on (restarted, notified)."""

import sys
import time

import click

from ..errors import TsubmitError, UsageError


@click.command()
@click.option("--every", default="30s", show_default=True, metavar="DURATION",
              help="Time between two passes (e.g. 30s, 2m).")
@click.option("--once", is_flag=True, help="One pass, then exit (for cron).")
@click.option("--install", is_flag=True,
              help="Add a crontab entry that runs `tsubmit watch --once` every minute (tsubmit cron).")
@click.option("--uninstall", is_flag=True, help="Remove that crontab entry.")
@click.pass_obj
def watch(obj, every, once, install, uninstall):
    """Refresh every job that may still run and is to be watched (--restarts,
    --notify), all of them in one playbook run, and act: a failed attempt is
    stopped everywhere and the next one launched while --restarts allows, and
    the notifications are sent; a pass every DURATION until Ctrl-C, or one
    with --once.

    Run it on a machine that stays up: while no watcher runs, the ranks go on
    but nothing is restarted or sent. Two watchers never act on the same job at
    once: a pass leaves a job another watcher (or `run --wait`) holds to it.
    """
    from ..jobs.request import positive_duration
    from ..jobs.watch import one_pass
    from ..local.store import open_store
    from ..output import state_phrase

    if install or uninstall:
        _cron_entry(install, uninstall, once)
        return
    interval = positive_duration(every, "--every")
    store = open_store()
    while True:
        try:
            done = one_pass(store, verbose=obj["verbose"])
        except TsubmitError as error:
            if once:
                raise
            click.echo(f"tsubmit watch: this pass failed, trying again in {every}: {error}", err=True)
        else:
            for job, _ in done.changed:
                click.echo(f"job {job.id} ({job.name}) {state_phrase(job.state)}"
                           + (f": {job.message}" if job.message and job.state == "failed" else ""))
            for job, cause in done.restarted:
                click.echo(f"job {job.id} ({job.name}) restarted as attempt {job.attempt}: {cause}")
            for job, error in done.failed:  # tried again by the next pass
                click.echo(f"tsubmit watch: job {job.id} ({job.name}): {error}", err=True)
                for host, message in getattr(error, "host_errors", {}).items():
                    click.echo(f"  {host}: {message}", err=True)
            if once and done.failed:
                sys.exit(done.failed[0][1].exit_code)
        if once:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            click.echo("tsubmit watch stopped; the jobs go on", err=True)
            sys.exit(0)


def _cron_entry(install: bool, uninstall: bool, once: bool) -> None:
    from ..jobs.cron import WATCH, install_watch, uninstall_watch

    if (install and uninstall) or once:
        raise UsageError("give one of --install, --uninstall or --once")
    if install:
        install_watch()
        click.echo(f"watcher installed: cron runs `tsubmit watch --once` every minute (schedule {WATCH!r} "
                   "in `tsubmit cron list`)")
    else:
        uninstall_watch()
        click.echo("watcher uninstalled")
