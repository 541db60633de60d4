"""`tsubmit list/status/logs/stop/restart/delete`: the job lifecycle."""

import sys
import time

import click

from ..errors import EXIT_JOB_FAILED, LaunchError, UsageError
from ..output import counted, state_phrase

LIST_WINDOW = 7 * 86400  # finished jobs older than this only show with --all


def _store():
    from ..local.store import open_store

    return open_store()


def _rank_rows(job):
    from .. import output as out
    from ..jobs.lifecycle import shown_rank_state

    return [[r.rank, r.host, shown_rank_state(r), r.pid, r.exit_code, out.timestamp(r.started_at),
             out.timestamp(r.ended_at), r.attempt] for r in job.ranks]


def print_summary(job) -> None:
    from .. import output as out
    from ..jobs.lifecycle import shown_state

    line = f"job {job.id} ({job.name}): {shown_state(job)}"
    click.echo(line + (f" — {job.message}" if job.message else ""))
    click.echo(out.table(["RANK", "HOST", "STATE", "PID", "EXIT", "STARTED", "ENDED", "ATTEMPT"],
                         _rank_rows(job)))
    if job.attempts:
        click.echo(out.table(["ATTEMPT", "HOSTS", "STARTED", "ENDED", "CAUSE", "THEN"], _attempt_rows(job)))
    if job.extras.get("notify"):
        from ..jobs.notify import public

        shown = public(job.extras["notify"])
        click.echo(f"notify: {', '.join(shown['urls'])} on {', '.join(shown['on'])}")
        for message in shown["pending"]:
            error = f"; last error: {message['error']}" if message["error"] else ""
            click.echo(f"notification pending: {message['event']} to {', '.join(message['to'])} "
                       f"(tried {out.counted(message['tries'], 'time')}{error})")


# What came after an attempt, by Job.attempts' "restart" (tsubmit/jobs/recovery.py).
_THEN = {"policy": "restarted (--restarts)", "resumed": "launched again (its launch was interrupted)",
         "user": "restarted (tsubmit restart)", None: "the job failed"}


def _attempt_rows(job) -> list[list]:
    """Each ended attempt of JOB, then the current one."""
    from .. import output as out

    rows = [[record["attempt"], ", ".join(record["hosts"]), out.timestamp(record.get("started_at")),
             out.timestamp(record.get("ended_at")), record["cause"], _THEN.get(record.get("restart"), "")]
            for record in job.attempts]
    if all(record["attempt"] != job.attempt for record in job.attempts):
        started = [rank.started_at for rank in job.ranks if rank.started_at]
        rows.append([job.attempt, ", ".join(rank.host for rank in job.ranks),
                     out.timestamp(min(started, default=None)), out.timestamp(job.ended_at), "",
                     str(job.state)])
    return rows


def _reason(job) -> str:
    """A job's state in a few words for list: the first failed rank, or what is pending."""
    rank = job.first_failure()
    reason = f"rank {rank.rank} on {rank.host} {rank.reason()}" if rank else ""
    if job.pending:
        reason = "; ".join(filter(None, [reason, f"{job.pending['action']} pending"]))
    return reason


@click.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs older than a week.")
@click.option("--cluster", help="Only jobs on this cluster.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def list_jobs(obj, show_all, cluster, output):
    """List jobs, newest first (states refreshed from the nodes in one playbook run)."""
    from .. import output as out
    from ..jobs.lifecycle import recently_silent, refresh, shown_state
    from ..jobs.views import job_view

    store = _store()
    jobs = store.jobs(where="cluster = ?", params=(cluster,)) if cluster else store.jobs()
    if not show_all:
        horizon = time.time() - LIST_WINDOW
        jobs = [j for j in jobs if j.may_run() or (j.ended_at or j.created_at) >= horizon]
    silent = recently_silent(store)
    jobs = refresh(store, jobs, skip_hosts=frozenset(silent), verbose=obj["verbose"])
    for host in sorted({r.host for j in jobs if j.may_run() for r in j.ranks} & set(silent)):
        since = time.strftime("%H:%M:%S", time.localtime(silent[host]))
        click.echo(f"tsubmit: {host} has not answered since {since}; its ranks are shown as last "
                   "recorded and asked again in a minute (`tsubmit status JOB` asks now)", err=True)
    if output == "json":
        click.echo(out.to_json([job_view(job) for job in jobs]))
        return
    now = time.time()
    rows = [[j.id, j.name, j.cluster, j.executor, len(j.ranks),
             shown_state(j, pending=True) + (f" (attempt {j.attempt})" if j.attempt > 1 else ""),
             out.duration(now - j.created_at),
             out.duration((j.ended_at or now) - (j.ranks[0].started_at or j.created_at)), _reason(j)]
            for j in jobs]
    click.echo(out.table(["ID", "NAME", "CLUSTER", "EXECUTOR", "NODES", "STATE", "AGE", "RUNTIME",
                          "REASON"], rows))


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def status(obj, job_ref, output):
    """Show a job and the state of each rank."""
    from .. import output as out
    from ..jobs.lifecycle import refresh
    from ..jobs.views import job_view
    from ..model import executors

    store = _store()
    try:
        job = store.find(job_ref)
    except UsageError as error:
        if output != "json":
            raise
        click.echo(out.to_json({"error": str(error)}))
        sys.exit(error.exit_code)
    refresh(store, [job], verbose=obj["verbose"])
    if output == "json":
        click.echo(out.to_json(job_view(job)))
        return
    click.echo(f"cluster {job.cluster}, executor {job.executor}, attempt {job.attempt}, "
               f"command: {' '.join(job.command)}")
    if job.inventory.get("head_reason"):
        click.echo(f"head: {job.ranks[0].host} ({job.inventory['head_reason']})")
    print_summary(job)
    if executors.get(job.executor).study_store:
        from ..optuna.study import format_summary, study_summary

        for line in format_summary(study_summary(job, verbose=obj["verbose"])):
            click.echo(line)


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--rank", "rank_number", type=int, help="Rank to show (default 0).")
@click.option("--all", "all_ranks", is_flag=True, help="Every rank, lines prefixed [rank N host].")
@click.option("--worker", type=int, help="Under the torchrun executor: only the lines of the worker "
              "of this global rank (torch's RANK), read from every node.")
@click.option("--tail", type=int, help="Only the last N lines of each rank.")
@click.option("-f", "--follow", is_flag=True, help="Stream until the job ends; exit with its result.")
@click.option("--attempt", type=int, help="An earlier attempt's log (default: the current one).")
@click.option("--setup", "setup_log", is_flag=True, help="The setup's output (run --setup) on the "
              "rank's node: what it ran, or that it was skipped.")
@click.pass_obj
def logs(obj, job_ref, rank_number, all_ranks, worker, tail, follow, attempt, setup_log):
    """Print a job's logs: rank 0 by default."""
    store = _store()
    job = store.find(job_ref)
    if setup_log and not job.extras.get("setup"):
        raise UsageError(f"job {job.id} has no setup (tsubmit run --setup CMD)")
    if setup_log and follow:
        raise UsageError("--setup shows the setup's log, complete before the rank starts: drop -f")
    from ..jobs.logs import worker_lines
    from ..nodes.places import select_ranks

    select = None
    if worker is not None:
        _check_worker(job, worker, rank_number, all_ranks, setup_log)
        select = worker_lines(worker)
    ranks = job.ranks if worker is not None else select_ranks(job, rank_number, all_ranks)
    attempt = attempt or job.attempt
    if not 1 <= attempt <= job.attempt:
        raise UsageError(f"--attempt must be between 1 and {job.attempt} for job {job.id}")
    if tail is not None and tail < 0:
        raise UsageError("--tail must be 0 or more")
    if follow:
        from ..jobs.wait import follow as follow_job

        follow_job(store, job, ranks, prefixed=all_ranks, tail=tail, verbose=obj["verbose"],
                   notice=_say, select=select)
        sys.exit(result_code(job))
    from ..jobs.logs import read
    from ..model.layout import LOG, SETUP_LOG

    copies: dict[int, float] = {}
    # A worker's last lines are not its node's: with --worker every line is read.
    lines = read(job, ranks, attempt, log=SETUP_LOG if setup_log else LOG, verbose=obj["verbose"],
                  tail=tail if select is None else None, copies=copies)
    for rank in ranks:
        if rank.rank in copies:
            from ..local.kept_logs import when

            _say(f"tsubmit: {rank.host} does not answer; rank {rank.rank}'s log is the copy kept on this "
                 f"machine at {when(copies[rank.rank])} (its last MiB as it stood then)")
    if select is not None:
        lines = {number: [kept for line in found if (kept := select(line)) is not None]
                 for number, found in lines.items()}
        if not any(lines.values()):
            _say(f"tsubmit: no line of worker {worker} in job {job.id}'s logs (attempt {attempt}): "
                 "workers are numbered 0 to WORLD_SIZE - 1")
    for rank in ranks:
        shown = lines[rank.rank][-tail:] if tail else ([] if tail == 0 else lines[rank.rank])
        prefix = f"[rank {rank.rank} {rank.host}] " if all_ranks else ""
        for line in shown:
            click.echo(prefix + line)


def _check_worker(job, worker: int, rank_number, all_ranks: bool, setup_log: bool) -> None:
    """--worker N needs torchrun's prefixed lines, and stands for --rank and --all."""
    if worker < 0:
        raise UsageError(f"--worker must be 0 or more (a worker's global rank), got {worker}")
    if rank_number is not None or all_ranks or setup_log:
        raise UsageError("--worker N reads every rank's log: drop --rank, --all and --setup")
    from ..model import executors

    if not executors.get(job.executor).node["torchrun"]:
        raise UsageError(f"--worker goes with the torchrun executor, whose workers' lines carry their "
                         f"rank; job {job.id} ran under {job.executor}: use --rank R")


def _say(line: str) -> None:
    click.echo(line, err=True)


def result_code(job) -> int:
    """A finished job's exit code: 0 when it succeeded, 1 otherwise."""
    from ..model.job import SUCCEEDED

    return 0 if job.state == SUCCEEDED else EXIT_JOB_FAILED


def wait_for_job(store, job, *, follow, all_ranks, timeout, verbose, summary=True) -> int:
    """`run --wait`: wait (wait.wait_for), print the per-rank summary, and
    return the exit code."""
    from ..jobs.wait import wait_for

    ranks = (job.ranks if all_ranks else job.ranks[:1]) if follow else None
    if not wait_for(store, job, timeout=timeout, follow=ranks, prefixed=all_ranks, verbose=verbose,
                    notice=_say):
        click.echo(f"tsubmit: job {job.id} exceeded its timeout of {timeout:g}s and was stopped",
                   err=True)
        return EXIT_JOB_FAILED
    if summary:
        print_summary(job)
        if not follow:
            click.echo(f"output: tsubmit logs {job.id} (--all for every rank)")
    return result_code(job)


@click.command("wait")
@click.argument("job_ref", metavar="JOB")
@click.pass_obj
def wait_job(obj, job_ref):
    """Wait until a job ends, refreshing it from its nodes (and sending its
    notifications); exit with its result: 0 if it succeeded, 1 if not.

    Ctrl-C stops the waiting, never the job."""
    store = _store()
    sys.exit(wait_for_job(store, store.find(job_ref), follow=False, all_ranks=False, timeout=None,
                          verbose=obj["verbose"]))


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--grace", type=int, default=30, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@click.pass_obj
def stop(obj, job_ref, grace):
    """Stop every process of every rank of a job (SIGTERM, SIGKILL after the grace period).

    Every node is asked, whatever tsubmit last recorded; a node that does not
    answer keeps the stop pending until a later stop or status reaches it.
    """
    from ..errors import LaunchError
    from ..jobs.lifecycle import stop as stop_job

    if grace < 0:
        raise UsageError("--grace must be 0 or more seconds")
    store = _store()
    job = store.find(job_ref)
    acted = stop_job(store, job, grace=grace, verbose=obj["verbose"])
    if acted.failures:
        raise LaunchError(f"job {job.id} ({job.name}) could not be stopped on every node; the stop "
                          f"stays pending there: run `tsubmit stop {job.id}` again once they answer",
                          acted.failures)
    if acted.stopped:
        click.echo(f"job {job.id} ({job.name}) stopped; {counted(acted.left, 'process', 'processes')} "
                   "left on its nodes")
    else:
        click.echo(f"job {job.id} ({job.name}) {state_phrase(job.state)}; nothing of it was running on "
                   "its nodes")


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.pass_obj
def restart(obj, job_ref):
    """Run a stopped, failed or finished job again as its next attempt."""
    from ..jobs.run import restart as restart_job

    store = _store()
    job = restart_job(store, store.find(job_ref), verbose=obj["verbose"])
    click.echo(f"job {job.id} ({job.name}) restarted as attempt {job.attempt}")


@click.command()
@click.argument("job_refs", metavar="JOB...", nargs=-1)
@click.option("--all", "delete_all", is_flag=True, help="Delete every job.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Forget a job even where its nodes cannot be reached "
              "(says what may be left there).")
@click.pass_obj
def delete(obj, job_refs, delete_all, yes, force):
    """Stop jobs, remove their directories on every node and their records."""
    from ..errors import LaunchError
    from ..jobs.lifecycle import delete as delete_job

    store = _store()
    if delete_all == bool(job_refs):
        raise UsageError("name the jobs to delete, or give --all")
    jobs = store.jobs() if delete_all else [store.find(ref) for ref in job_refs]
    if not jobs:
        click.echo("no jobs to delete")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("delete needs --yes when not run from a terminal")
        names = ", ".join(f"{j.id} ({j.name})" for j in jobs)
        click.confirm(f"Delete {names}?", abort=True)
    failed = {}
    for job in jobs:
        failures = delete_job(store, job, force=force, verbose=obj["verbose"])
        if failures and force:
            click.echo(f"job {job.id} ({job.name}) forgotten; it could not be removed from every node:",
                       err=True)
            for host, message in failures.items():
                click.echo(f"  {host} ({message}): may still hold the job's folder <tsubmit_remote_root>/"
                           f"{job.id} and processes whose environment has "
                           f"TSUBMIT_RANK_MARKER={job.id}.r*", err=True)
        elif failures:
            failed.update({f"{job.id} on {host}": message for host, message in failures.items()})
        else:
            click.echo(f"job {job.id} ({job.name}) deleted")
    if failed:
        raise LaunchError("some jobs could not be deleted everywhere; their records are kept, marked "
                          "as pending that cleanup (`tsubmit delete --force` forgets them anyway)", failed)


@click.command("gc")
@click.option("--older-than", default="7d", show_default=True,
              help="Age of finished jobs to remove (e.g. 7d, 12h).")
@click.option("--setups-unused-for", metavar="AGE", help="Also remove the setup folders (run "
              "--setup) no rank used for AGE (e.g. 30d) on the nodes of the jobs tsubmit knows; one a "
              "setup writes or a running rank uses stays.")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_obj
def gc(obj, older_than, setups_unused_for, dry_run, output):
    """Remove old finished jobs: remote directories, runner data and records. Running jobs stay.

    With --setups-unused-for, also the nodes' setup folders (run --setup) that no
    rank used for that long; one in use stays."""
    from .. import output as out
    from ..jobs.lifecycle import collect_garbage
    from ..jobs.request import parse_duration

    removed = collect_garbage(_store(), parse_duration(older_than), dry_run=dry_run,
                              setups_unused_for=(parse_duration(setups_unused_for)
                                                 if setups_unused_for is not None else None),
                              verbose=obj["verbose"])
    if output == "json":
        click.echo(out.to_json({"dry_run": dry_run, **removed}))
    else:
        _print_removed(removed, dry_run)
    if removed["delete_failures"]:
        raise LaunchError("cannot remove every old job from its nodes; they stay recorded, run gc "
                          "again once the nodes answer", removed["delete_failures"])
    if removed.get("setup_failures"):
        raise LaunchError("cannot look for unused setup folders on every node; run gc again once "
                          "they answer", removed["setup_failures"])


def _print_removed(removed: dict, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(removed['jobs'])} job(s), {len(removed['runs'])} runner data dir(s), "
               f"{len(removed['archives'])} archive(s)")
    for job in removed["jobs"]:
        click.echo(f"  job {job}")
    if "setups" in removed:
        click.echo(f"{verb} {len(removed['setups'])} setup folder(s)")
        for setup in removed["setups"]:
            click.echo(f"  setup {setup}")
        for setup in removed["setups_in_use"]:
            click.echo(f"  kept setup {setup} (in use)")
    for kept in removed["kept"]:
        click.echo(f"  kept {kept} (a node could not be reached)", err=True)


@click.command()
@click.argument("job_ref", metavar="JOB")
@click.option("--attempt", type=int, help="An earlier attempt's post-mortem (default: the current one).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def postmortem(job_ref, attempt, output):
    """What a failed or hung job's ranks were doing: which rank stood where first,
    then each one's stacks (py-spy, else state and wchan), its log's last 200
    lines and nvidia-smi, as taken before its ranks were stopped."""
    from .. import output as out
    from ..jobs import postmortem as postmortems

    job = _store().find(job_ref)
    attempt = attempt or job.attempt
    if not 1 <= attempt <= job.attempt:
        raise UsageError(f"--attempt must be between 1 and {job.attempt} for job {job.id}")
    report = postmortems.load(job, attempt)
    if report is None:
        raise UsageError(f"job {job.id} has no post-mortem of attempt {attempt}: one is taken when a "
                         f"job fails or hangs, and the job {state_phrase(job.state)}")
    if output == "json":
        click.echo(out.to_json(report))
        return
    for line in postmortems.render(report):
        click.echo(line)
