"""Waiting for a job: `run --wait`, `tsubmit wait` and `logs -f`.

A wait refreshes the job from its nodes until it ends (lifecycle.refresh),
and acts on it as `tsubmit watch` does (recovery.act) unless a watcher holds
it: an attempt that fails is ended and, while --restarts allows, the next one
launched and waited for.
"""

import copy
import threading
import time

from ..interrupts import Interrupted
from ..local.store import JobStore
from ..model import states
from ..model.job import Job, Rank
from ..nodes import progress
from . import attempts, logs, recovery
from .lifecycle import refresh, stop


def wait(store: JobStore, job: Job, *, timeout: float | None = None, interval: float = 2.0,
         verbose: int = 0, notice=None, restarted=None) -> bool:
    """Block until the job ends; False when the timeout came first. A node that
    stops answering does not end the wait (it may come back, its rank may run),
    but NOTICE (a callable taking a line) hears of it each time the set of silent
    nodes changes, so the wait is never silent about it. The wait watches the
    job as `tsubmit watch` does (_watch_own): an attempt that fails is ended
    and, while --restarts allows, the next one launched (JOB becomes it, and
    RESTARTED hears of it) and waited for."""
    deadline = None if timeout is None else time.monotonic() + timeout
    silent: list[str] = []
    while True:
        with progress.shown(False):  # a table every few seconds would bury the notices and logs
            refresh(store, [job], verbose=verbose)
            _watch_own(store, job, notice, restarted, verbose=verbose)
        now_silent = sorted({rank.host for rank in job.ranks if rank.state == states.UNREACHABLE})
        if notice and now_silent != silent:
            notice(f"tsubmit: no answer from {', '.join(now_silent)} about job {job.id}; still waiting"
                   if now_silent else f"tsubmit: every node of job {job.id} answers again")
        silent = now_silent
        if job.state in states.FINISHED_STATES and not attempts.awaits_restart(job) and not any(
                rank.state in states.LIVE_RANK_STATES for rank in job.ranks):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))


def _watch_own(store: JobStore, job: Job, notice, restarted, *, verbose: int = 0) -> None:
    """What a watcher does (recovery.act) for the job a `run --wait` waits for,
    unless a watcher holds it: JOB becomes its next attempt if there is one."""
    from ..errors import TsubmitError

    if not recovery.must_act(job):
        return
    with recovery.job_lock(job.id) as mine:
        # The record as it is now: a watcher may have restarted the job already.
        [now] = store.jobs(where="id = ?", params=(job.id,)) or [job]
        if mine:
            try:
                now = recovery.act(store, now, verbose=verbose)
            except TsubmitError as error:  # tried again at the next refresh
                if notice:
                    hosts = "".join(f"; {host}: {message}"
                                    for host, message in getattr(error, "host_errors", {}).items())
                    notice(f"tsubmit: job {job.id}: {error}{hosts}")
    attempt = job.attempt
    job.__dict__.update(now.__dict__)
    if job.attempt != attempt:
        if notice:
            notice(f"tsubmit: job {job.id} restarted as attempt {job.attempt}: {job.restart_cause()}")
        if restarted:
            restarted(job)


def wait_for(store: JobStore, job: Job, *, timeout: float | None = None,
             follow: list[Rank] | None = None, prefixed: bool = False, verbose: int = 0,
             notice=None) -> bool:
    """`run --wait`: block until the job ends, streaming FOLLOW's logs meanwhile
    (prefixed `[rank N host]` when PREFIXED). Past TIMEOUT the job is stopped
    and False returned. Ctrl-C stops the waiting, never the job."""
    streamer = None

    def stream(_=None) -> None:  # the current attempt's logs
        nonlocal streamer
        attempt = copy.deepcopy(job)  # the waiting goes on changing JOB
        ranks = [rank for rank in attempt.ranks if rank.rank in {wanted.rank for wanted in follow}]
        streamer = threading.Thread(target=logs.stream, args=(attempt, ranks, prefixed, None), daemon=True)
        streamer.start()

    if follow:
        stream()
    try:
        finished = wait(store, job, timeout=timeout, verbose=verbose, notice=notice,
                        restarted=stream if follow else None)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting; job {job.id} goes on (tsubmit stop {job.id})") from None
    if not finished:
        stop(store, job, verbose=verbose)
        return False
    if streamer:
        streamer.join(timeout=10)  # the last lines of a log that ended with its rank
    return True


def follow(store: JobStore, job: Job, ranks: list[Rank], *, prefixed: bool = False,
           tail: int | None = None, verbose: int = 0, notice=None, select=None) -> None:
    """`logs -f`: stream RANKS' logs (the lines SELECT keeps) until their processes
    end, then wait for the job's other ranks, so the job's state is its final one."""
    logs.stream(job, ranks, prefixed, tail, select)
    wait(store, job, verbose=verbose, notice=notice)
