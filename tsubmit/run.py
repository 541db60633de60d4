"""`tsubmit run`'s front door: one job, planned, then launched.

`dry_run(spec)` turns a job spec into the Launch that `run(launch)` launches:
`--dry-run` (describe), `--check` and `export` are views of that same object,
never a second plan. `run` reads top to bottom: the if-running policy, the GPU
queue, the launch.

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

from . import gpu_leases, notify, output, submit
from .errors import EXIT_REFUSED, LaunchError, TsubmitError
from .job import Job
from .paths import ensure_private_dir, state_dir
from .spec import Behaviour, RunRequest, request_from_spec
from .store import JobStore, open_store


class Refused(TsubmitError):
    exit_code = EXIT_REFUSED


@dataclass
class Launch:
    """What `run` launches: the planned job on its cluster, and how to run it."""

    plan: submit.Plan
    request: RunRequest
    behaviour: Behaviour

    @property
    def job(self) -> Job:
        return self.plan.job

    def describe(self) -> dict:
        """The `--dry-run` view: inventory, extra-vars and each rank's command, secrets masked."""
        return submit.dry_run(self.plan)

    def check(self, *, verbose: int = 1) -> dict[str, dict]:
        """The `--check` view: the submit playbook in Ansible's check mode."""
        return submit.check(self.plan, self.request.workdir, verbose=verbose)

    def export(self, destination, *, force: bool = False) -> None:
        """The `export` view: a self-contained Ansible project in DESTINATION."""
        from .export import export

        export(self.plan, self.request.workdir, destination, force=force)

    def fresh(self) -> submit.Plan:
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
    the_plan = submit.plan(request)
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


@contextmanager
def name_lock(name: str) -> Iterator[None]:
    locks = ensure_private_dir(state_dir() / "locks")
    path = locks / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _running(store: JobStore, name: str) -> list[Job]:
    """The jobs of this name that run, as their nodes say."""
    from .lifecycle import ACTIVE_STATES, refresh

    candidates = [job for job in store.jobs(where="name = ?", params=(name,)) if job.state in ACTIVE_STATES]
    return [job for job in refresh(store, candidates) if job.state in ACTIVE_STATES]


def _replace(store: JobStore, running: list[Job], *, verbose: int = 0) -> None:
    """--if-running replace: stop what runs under the name first."""
    from .lifecycle import stop

    for job in running:
        acted = stop(store, job, verbose=verbose)
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
            job = submit.submit(the_plan, launch.request.workdir, store,
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
    from .progress import Progress

    return Progress(hosts, submit.START_TASKS, live=output.interactive(sys.stderr))
