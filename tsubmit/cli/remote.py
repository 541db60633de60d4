"""`tsubmit fetch/shell/forward`: getting at a job's nodes."""

import sys

import click


def _places(job_ref, rank_number, all_ranks=False):
    from ..local.store import open_store
    from ..nodes.places import places, select_ranks

    job = open_store().find(job_ref)
    return places(job, select_ranks(job, rank_number, all_ranks))


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("--rank", "rank_number", type=int, help="Rank to fetch from (default 0).")
@click.option("--all", "all_ranks", is_flag=True, help="From every rank, each into DEST/rank-R/.")
@click.option("--dest", default=".", show_default=True, help="Local folder to fetch into.")
@click.option("--overwrite", is_flag=True, help="Replace local files that exist.")
def fetch(job_ref, paths, rank_number, all_ranks, dest, overwrite):
    """Bring files or folders of a job's workdir home: DEST/PATH (--all: DEST/rank-R/PATH).

    PATHs are relative to the job's workdir on the node. One stream per node;
    sparse files stay sparse, executable bits are kept; running jobs too."""
    from ..jobs.fetch_files import ProgressLine, check_paths, fetch, size_text
    from ..output import counted

    check_paths(paths)  # before the store and the inventory are read
    found = _places(job_ref, rank_number, all_ranks)
    line = ProgressLine() if sys.stderr.isatty() else None
    try:
        fetched = fetch(found, list(paths), dest, per_rank=all_ranks, overwrite=overwrite, progress=line)
    finally:
        if line:
            line.done()
    for result in fetched:
        for warning in result.warnings:
            click.echo(f"tsubmit: warning: {warning}", err=True)
        click.echo(f"rank {result.place.rank.rank} ({result.place.rank.host}): {', '.join(paths)} -> "
                   f"{result.folder} ({counted(result.files, 'file')}, {size_text(result.size)})")


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--rank", "rank_number", type=int, help="Rank whose node to open (default 0).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def shell(job_ref, rank_number, command):
    """An SSH session on a rank's node, in the job's workdir with the rank's environment.

    With `-- COMMAND...`, runs it (the words as given, no shell) and exits with
    its code; without, the node user's shell, on a terminal."""
    from ..jobs.shell import shell as open_shell

    (place,) = _places(job_ref, rank_number)
    sys.exit(open_shell(place, list(command)))


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.argument("port", type=int)
@click.option("--rank", "rank_number", type=int, help="Rank whose node to reach (default 0).")
@click.option("--local-port", type=int, help="Port here (default: PORT if free, else a free one).")
def forward(job_ref, port, rank_number, local_port):
    """Forward 127.0.0.1:LOCAL_PORT here to 127.0.0.1:PORT on a rank's node over SSH
    (TensorBoard, a demo, a debugger) until Ctrl-C."""
    from ..jobs.forward import forward as open_forward
    from ..nodes.ports import check_port

    check_port(port, "PORT")
    if local_port is not None:
        check_port(local_port, "--local-port")
    (place,) = _places(job_ref, rank_number)

    def ready(url, _local):
        click.echo(f"forwarding {url} -> {place.rank.host} 127.0.0.1:{port} (rank {place.rank.rank} of job "
                   f"{place.job.id}); Ctrl-C to stop")

    try:
        open_forward(place, port, local_port, ready)
    except KeyboardInterrupt:
        click.echo("forward closed", err=True)

