"""`tsubmit db ...` (named external Optuna storages) and `tsubmit optuna ...`
(the study of an Optuna job: show, fetch, dashboard)."""

import sys
import time

import click


@click.group("db")
def db():
    """Named external Optuna storages (PostgreSQL, MySQL) for `run --optuna-storage NAME`.

    They live in <config dir>/optuna-storages.yml, mode 0600; passwords are never printed.
    """


@db.command("add")
@click.argument("name")
@click.argument("url", required=False)
@click.option("--replace", is_flag=True, help="Replace a storage of that name.")
def db_add(name, url, replace):
    """Add storage NAME. Give URL, or leave it out to type it without echo (or pipe it
    on stdin): a URL on the command line stays in your shell history."""
    from ..optuna.storages import add_storage, check_storage_name, mask_url

    check_storage_name(name)
    if url is None:
        url = click.prompt("URL", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()
        url = url.strip()
    add_storage(name, url, replace=replace)
    click.echo(f"storage {name}: {mask_url(url)}")


@db.command("list")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def db_list(output):
    """List the named storages (passwords masked)."""
    from .. import output as out
    from ..optuna.storages import list_storages

    storages = list_storages()
    if output == "json":
        click.echo(out.to_json(storages))
        return
    click.echo(out.table(["NAME", "URL"], [[s["name"], s["url"]] for s in storages]))


@db.command("remove")
@click.argument("name")
def db_remove(name):
    """Forget storage NAME (the database itself is not touched)."""
    from ..optuna.storages import remove_storage

    remove_storage(name)
    click.echo(f"removed storage {name}")


@click.group("optuna")
def optuna():
    """The study of an Optuna job (`tsubmit run --executor optuna`)."""


def _job(job_ref):
    from ..local.store import open_store

    return open_store().find(job_ref)


@optuna.command("show")
@click.argument("job_ref", metavar="JOB")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def show(obj, job_ref, output):
    """Trials by state and the best value and params so far."""
    from .. import output as out
    from ..optuna.study import format_summary, study_summary

    summary = study_summary(_job(job_ref), verbose=(obj or {}).get("verbose", 0))
    if output == "json":
        click.echo(out.to_json(summary))
    else:
        for line in format_summary(summary):
            click.echo(line)
    if "error" in summary:
        sys.exit(3)


@optuna.command("fetch")
@click.argument("job_ref", metavar="JOB")
@click.argument("path", required=False, type=click.Path(dir_okay=True))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@click.pass_obj
def fetch(obj, job_ref, path, force):
    """Copy the job's study database back: a consistent SQLite snapshot (the WAL
    checkpointed, then SQLite's backup API). PATH defaults to ./<study>.db."""
    from ..optuna.study import fetch_study

    result = fetch_study(_job(job_ref), path, force=force, verbose=(obj or {}).get("verbose", 0))
    click.echo(f"study {result['study']}: {result['trials']} trials -> {result['path']}")


@optuna.command("dashboard")
@click.argument("job_ref", metavar="JOB")
@click.option("--port", type=int, default=0, help="Local port (default: a free one).")
@click.pass_obj
def dashboard(obj, job_ref, port):
    """Forward the job's optuna-dashboard (on the head's 127.0.0.1) to a local port over
    SSH and print its URL; blocks until Ctrl-C. Starts a dashboard over the study
    file when none runs (also after the job ended) and stops that one on exit."""
    from ..nodes.ports import check_port
    from ..nodes.ssh_session import ended_forward
    from ..optuna.dashboard import close_dashboard, forward_dashboard, open_dashboard

    verbose = (obj or {}).get("verbose", 0)
    if port:
        check_port(port, "--port")
    job = _job(job_ref)
    opened = open_dashboard(job, verbose=verbose)
    forward = None
    try:
        forward, url = forward_dashboard(job, opened["port"], port or None)
        click.echo(f"optuna-dashboard of job {job.id}: {url}  (Ctrl-C to stop)")
        if forward is None:  # a local head: nothing to forward
            while True:
                time.sleep(3600)
        forward.wait()
        raise ended_forward(forward, "the dashboard's forward ended", "--port")
    except KeyboardInterrupt:
        pass
    finally:
        if forward is not None:
            forward.end()
        if opened.get("started"):
            close_dashboard(job, verbose=verbose)
