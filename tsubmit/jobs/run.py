"""`tsubmit run`'s front door: one job, planned, then launched.

`dry_run(spec)` turns a job spec into the Launch that `run(launch)` launches:
`--dry-run` (describe), `--check` and `export` are views of that same object,
never a second plan. `run` reads top to bottom: the if-running policy, the GPU
queue, the launch. `restart` launches a recorded job's next attempt through
`relaunch`, the one call that also launches it elsewhere (a plan on other
hosts).

The policy's check and the launch happen under an exclusive lock per job name
in the state dir, so concurrent submissions (cron runs that overlap, ten
started in the same second) see each other: no check-then-act race.
"""

import copy
import fcntl
import hashlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

from .. import output
from ..errors import EXIT_REFUSED, LaunchError, TsubmitError, UsageError
from ..local import kept_inventories
from ..local.archive import Archive
from ..local.store import JobStore, open_store
from ..model.job import Job, Rank
from ..model.states import ACTIVE_STATES, DELETED, LIVE_RANK_STATES
from ..nodes import actions, gpu_leases
from ..output import state_phrase
from ..paths import ensure_private_dir, state_dir
from . import attempts, lifecycle, notify, preview, sync_dirs
from . import launch as launching
from . import plan as planning
from .request import Behaviour, RunRequest, request_from_spec


class Refused(TsubmitError):
    exit_code = EXIT_REFUSED


@dataclass
class Launch:
    """What `run` launches: the planned job on its cluster, and how to run it."""

    plan: planning.Plan
    request: RunRequest
    behaviour: Behaviour

    @property
    def job(self) -> Job:
        return self.plan.job

    def describe(self) -> dict:
        """The `--dry-run` view: inventory, extra-vars and each rank's command, secrets masked."""
        return preview.describe(self.plan)

    def check(self, *, verbose: int = 1) -> dict[str, dict]:
        """The `--check` view: the submit playbook in Ansible's check mode."""
        return launching.check(self.plan, self.request.workdir, verbose=verbose)

    def export(self, destination, *, force: bool = False) -> None:
        """The `export` view: a self-contained Ansible project in DESTINATION."""
        from .export import export

        export(self.plan, self.request.workdir, destination, force=force)

    def fresh(self) -> planning.Plan:
        """A plan of its own for one try: a try that lost (GPUs busy) leaves this launch as planned."""
        return replace(self.plan, job=copy.deepcopy(self.plan.job))


@dataclass
class Outcome:
    store: JobStore
    job: Job | None = None
    skipped_for: Job | None = None  # the running job a `skip` deferred to


def dry_run(spec: dict, asked_vault_file: str | None = None) -> Launch:
    """The Launch a spec describes, validated and planned; nothing touches a node."""
    request, behaviour = request_from_spec(spec, asked_vault_file)
    the_plan = planning.plan(request)
    if asked_vault_file:
        # Asked for, never stored: the temporary file is gone after this command.
        the_plan.job.inventory["vault_password_file"] = None
    return Launch(the_plan, request, behaviour)


def run(launch: Launch, *, verbose: int = 0) -> Outcome:
    """Launch LAUNCH as its if-running policy and GPU queue say."""
    store = open_store()
    policy = launch.behaviour.if_running
    with nullcontext() if policy == "allow" else name_lock(launch.request.name):
        running = [] if policy == "allow" else _running(store, launch.request.name)
        if running and policy == "skip":
            return Outcome(store, skipped_for=running[0])
        if running and policy == "fail":
            raise Refused(f"job {launch.request.name!r} is running as {running[0].id}; "
                          "refused (--if-running fail)")
        _replace(store, running, verbose=verbose)
        return Outcome(store, _launch_when_leased(store, launch, verbose=verbose))


def restart(store: JobStore, job: Job, *, verbose: int = 0) -> Job:
    """`tsubmit restart`: JOB's next attempt on its own hosts, once nothing of it runs."""
    lifecycle.refresh(store, [job], verbose=verbose)
    if job.state == DELETED:
        raise UsageError(f"job {job.id} is {job.message}; submit it again")
    if job.pending:
        raise UsageError(f"job {job.id}: {job.message}; run `tsubmit stop {job.id}` once "
                         f"{', '.join(job.pending['hosts'])} answers, then restart it")
    running = [rank for rank in job.ranks if rank.state in LIVE_RANK_STATES]
    if running:
        rank = running[0]
        raise UsageError(f"job {job.id} still runs (rank {rank.rank} on {rank.host} is {rank.state}); "
                         f"stop it first: tsubmit stop {job.id}")
    # Before anything changes: a host gone from the inventory is refused.
    the_plan = planning.replan(job)
    attempts.record_user_restart(job)
    return relaunch(store, the_plan, verbose=verbose)


def relaunch(store: JobStore, the_plan: planning.Plan, *, on_event=None, verbose: int = 0) -> Job:
    """Launch the recorded job of THE_PLAN, which has ended, as its next attempt
    on THE_PLAN's nodes (rank for rank: a node may take another's rank, and
    there may be fewer: tsubmit/jobs/recovery_plan.py), with
    the same archive and options, all or nothing: a launch that fails on any
    node is rolled back everywhere and the job stays as it was, at its attempt,
    restartable. The job's synced folders (--sync-dir) are copied to the plan's
    nodes first. Returns the job's next attempt."""
    job = the_plan.job
    archive = _kept_archive(job)
    # The checkpoint follows the job: a sync that fails leaves the job as it was.
    sync_dirs.sync(job, the_plan, verbose=verbose)
    attempt = copy.deepcopy(job)
    kept_inventories.launching_from(attempt.inventory, the_plan.cluster.ref.sources)
    # The plan's nodes, rank for rank: the same, spares for lost nodes, or fewer (recovery_plan).
    attempt.start_next_attempt([Rank(node.rank, node.name, node.address, nproc=job.gpus or node.gpus)
                                for node in the_plan.cluster.nodes])
    if the_plan.cluster.nodes[0].name != job.head.host:
        attempt.inventory["head_reason"] = the_plan.cluster.head_reason
    attempt.launcher = actions.launcher_identity()
    store.save(attempt)

    rolled_back = False

    def roll_back(failures: dict[str, str] | None) -> str:
        nonlocal rolled_back
        acted = actions.act(attempt, "rollback", [rank.host for rank in attempt.ranks],
                                 grace=actions.ROLLBACK_GRACE, attempt=attempt.attempt, verbose=verbose)
        rolled_back = True
        job.pending = attempt.pending  # what the rollback still owes some nodes
        what = "interrupted" if failures is None else "failed"
        left = f"; still to roll back on {', '.join(acted.failures)}" if acted.failures else ""
        return (f"restart of job {job.id} as attempt {attempt.attempt} {what}; rolled back{left}, the job "
                f"{state_phrase(job.state)} at attempt {job.attempt} as before")

    try:
        launching.launch(attempt, store, launching.target(replace(the_plan, job=attempt), archive),
                      roll_back=roll_back, on_event=on_event, verbose=verbose)
    finally:
        if rolled_back:  # the record is the job as it was, with why its next attempt failed
            job.message = attempt.message or lifecycle.describe(job) or job.message
            store.save(job, patient=True)
    return attempt


def _kept_archive(job: Job) -> Archive:
    path = state_dir() / "archives" / f"{job.archive}.tar.gz"
    if not path.exists():
        raise UsageError(f"the archive of job {job.id} is gone from {path}; submit it again")
    return Archive(path, job.archive, 0, path.stat().st_size)


@contextmanager
def name_lock(name: str) -> Iterator[None]:
    locks = ensure_private_dir(state_dir() / "locks")
    path = locks / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _running(store: JobStore, name: str) -> list[Job]:
    """The jobs of this name that run, as their nodes say."""
    candidates = [job for job in store.jobs(where="name = ?", params=(name,)) if job.state in ACTIVE_STATES]
    return [job for job in lifecycle.refresh(store, candidates) if job.state in ACTIVE_STATES]


def _replace(store: JobStore, running: list[Job], *, verbose: int = 0) -> None:
    """--if-running replace: stop what runs under the name first."""
    for job in running:
        acted = lifecycle.stop(store, job, verbose=verbose)
        if acted.failures:
            raise LaunchError(f"job {job.id} ({job.name}) could not be stopped on every node, "
                              "so it was not replaced (--if-running replace)", acted.failures)


def _launch_when_leased(store: JobStore, launch: Launch, *, verbose: int = 0) -> Job:
    """Launch; with --queue, while the GPUs are busy, wait until every node can
    lease and launch again, giving up after --queue-timeout (exit 5). A queued
    job is recorded only once it starts: the record of a try that lost is
    removed, so Ctrl-C while queued leaves nothing."""
    behaviour = launch.behaviour
    deadline = None if behaviour.queue_timeout is None else time.monotonic() + behaviour.queue_timeout
    waited = False
    while True:
        the_plan = launch.fresh()
        try:
            job = launching.submit(the_plan, launch.request.workdir, store,
                                on_event=_progress([node.name for node in the_plan.cluster.nodes]),
                                verbose=verbose)
        except gpu_leases.GpusBusy as busy:
            if not behaviour.queue:
                raise
            store.delete(the_plan.job.id)
            gpu_leases.wait_until_free(the_plan, busy.reports, deadline, verbose=verbose)
            waited = True
            continue
        if waited and notify.record(job, "started"):
            store.save(job)
            notify.deliver(store, [job])
        return job


def _progress(hosts: list[str]):
    from ..nodes.progress import Progress

    return Progress(hosts, launching.START_TASKS, live=output.interactive(sys.stderr))
