"""The overlap policy of `run --if-running`, keyed on the job name.

The check and the submission happen under an exclusive lock per name in the
state dir, so concurrent submissions (cron runs that overlap, ten started in
the same second) see each other: no check-then-act race.
"""

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import EXIT_REFUSED, LaunchError, TsubmitError
from .job import Job
from .paths import ensure_private_dir, state_dir
from .spec import Behaviour, RunRequest, request_from_spec
from .store import JobStore, open_store
from .submit import Plan, plan


class Refused(TsubmitError):
    exit_code = EXIT_REFUSED


@dataclass
class Outcome:
    store: JobStore
    job: Job | None = None
    skipped_for: Job | None = None  # the running job a `skip` deferred to


def the_plan_for(spec: dict, asked_vault_file: str | None) -> tuple[Plan, RunRequest, Behaviour]:
    request, behaviour = request_from_spec(spec, asked_vault_file)
    the_plan = plan(request)
    if asked_vault_file:
        # Asked for, never stored: the temporary file is gone after this command.
        the_plan.job.inventory["vault_password_file"] = None
    return the_plan, request, behaviour


@contextmanager
def name_lock(name: str) -> Iterator[None]:
    locks = ensure_private_dir(state_dir() / "locks")
    path = locks / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def submit_with_policy(the_plan: Plan, request: RunRequest, behaviour: Behaviour,
                       submit: Callable[[JobStore], Job]) -> Outcome:
    from .lifecycle import ACTIVE_STATES, refresh, stop

    store = open_store()
    if behaviour.if_running == "allow":
        return Outcome(store, submit(store))
    with name_lock(request.name):
        same_name = store.jobs(where="name = ?", params=(request.name,))
        candidates = [job for job in same_name if job.state in ACTIVE_STATES]
        running = [job for job in refresh(store, candidates) if job.state in ACTIVE_STATES]
        if running:
            if behaviour.if_running == "skip":
                return Outcome(store, skipped_for=running[0])
            if behaviour.if_running == "fail":
                raise Refused(f"job {request.name!r} is running as {running[0].id}; "
                              "refused (--if-running fail)")
            for job in running:  # replace
                acted = stop(store, job)
                if acted.failures:
                    raise LaunchError(f"job {job.id} ({job.name}) could not be stopped on every node, "
                                      "so it was not replaced (--if-running replace)", acted.failures)
        return Outcome(store, submit(store))
