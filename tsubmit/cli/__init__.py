"""The `tsubmit` command line: parse, call, print. Heavy modules load lazily
so `tsubmit --help` stays fast."""

import sys

import click

from .. import __version__
from ..errors import EXIT_CODES, EXIT_USAGE, TsubmitError
from ..interrupts import exit_interrupted
from .ansible_info import ansible_info
from .cluster import cluster
from .cron import cron
from .jobs import delete, gc, list_jobs, logs, postmortem, restart, status, stop, wait_job
from .notify import notify
from .optuna import db, optuna
from .remote import fetch, forward, shell
from .run import export, run
from .watch import watch


class _Group(click.Group):
    def main(self, *args, **kwargs):
        kwargs.setdefault("prog_name", "tsubmit")
        return super().main(*args, **kwargs)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:  # click's own answer would be "Aborted!" and 1
            exit_interrupted()

    def invoke(self, ctx):
        from ..nodes.progress import shown

        try:
            with shown():  # per-node progress of every verb, on a terminal
                return super().invoke(ctx)
        except TsubmitError as error:
            click.echo(f"tsubmit: {error}", err=True)
            for host, message in getattr(error, "host_errors", {}).items():
                click.echo(f"  {host}: {message}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            exit_interrupted()


HELP = ("Submit and manage distributed PyTorch jobs on machines reachable over SSH.\n\nExit codes: "
        + ", ".join(f"{code} {name}" for code, (name, _) in EXIT_CODES.items()) + ".")


@click.group(cls=_Group, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tsubmit")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output (-vv for more).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    ctx.obj = {"verbose": verbose}


for command in (run, cluster, list_jobs, status, logs, stop, restart, delete, cron, gc, export, db, optuna):
    main.add_command(command)
for command in (fetch, shell, forward, notify, wait_job, postmortem, watch):
    main.add_command(command)
main.add_command(list_jobs, "jobs")
main.add_command(ansible_info)

__all__ = ["EXIT_USAGE", "main"]
