"""The restart policy's bookkeeping (tsubmit/jobs/attempts.py), which needs no node:
which attempts count as restarts, when a job awaits one, what the next attempt
is told, and that the policy reaches the job record from a spec."""

import pytest

from tsubmit.jobs import attempts
from tsubmit.jobs.request import request_from_spec
from tsubmit.model.job import Job, Rank
from tsubmit.model.states import FAILED, RUNNING, STOPPED, SUCCEEDED


def make_job(state=FAILED, *, restarts=2, attempt=1, attempts=(), exit_codes=(0, 3)) -> Job:
    ranks = [Rank(i, f"node{i}", f"10.0.0.{i}", pid=100 + i, started_at=10.0 + i, ended_at=20.0 + i,
                  exit_code=code, attempt=attempt, state=SUCCEEDED if code == 0 else FAILED)
             for i, code in enumerate(exit_codes)]
    return Job(id="j", name="n", cluster="c", inventory={"sources": []}, executor="distributed",
               command=["true"], workdir="/tmp", state=state, attempt=attempt,
               extras={"recovery": {"restarts": restarts}} if restarts else {},
               attempts=[dict(record) for record in attempts], ranks=ranks)


def test_a_failed_attempt_awaits_a_restart_and_names_the_first_failed_rank():
    job = make_job()
    assert attempts.failure(job) == "rank 1 on node1 exited with 3"
    assert attempts.awaits_restart(job) and attempts.acted_on(job)


@pytest.mark.parametrize("job", [
    make_job(restarts=0),  # no policy
    make_job(state=SUCCEEDED, exit_codes=(0, 0)),
    make_job(state=STOPPED),  # a user's stop is not a failure
    make_job(attempts=[{"attempt": 1, "cause": "x", "restart": None}]),  # ended for good
], ids=["no policy", "succeeded", "stopped", "ended for good"])
def test_what_does_not_await_a_restart(job):
    assert not attempts.awaits_restart(job)


def test_a_job_with_a_stop_pending_waits_for_it_before_any_restart():
    job = make_job()
    job.pending = {"action": "stop", "hosts": ["node1"], "grace": 10, "attempt": None}
    assert attempts.failure(job) is None


def test_restarts_count_the_policys_own_since_the_last_restart_by_hand():
    records = [{"attempt": 1, "restart": "policy"}, {"attempt": 2, "restart": "resumed"},
               {"attempt": 3, "restart": "policy"}]
    assert attempts.restarts_used(make_job(attempt=4, attempts=records)) == 2  # a resumed launch is free
    by_hand = [*records, {"attempt": 4, "restart": "user"}, {"attempt": 5, "restart": "policy"}]
    assert attempts.restarts_used(make_job(attempt=6, attempts=by_hand)) == 1
    # The current attempt's own record (a pass killed before its relaunch) is not counted twice.
    assert attempts.restarts_used(make_job(attempt=3, attempts=records)) == 1


def test_an_attempt_is_recorded_once_and_the_next_one_is_told_why_it_ended():
    job = make_job(attempt=2)
    attempts.record(job, "first try", attempts.POLICY)
    attempts.record(job, "rank 1 on node1 exited with 3", attempts.POLICY)  # a second pass: replaced
    [record] = job.attempts
    assert record == {"attempt": 2, "hosts": ["node0", "node1"], "started_at": 10.0, "ended_at": 21.0,
                      "cause": "rank 1 on node1 exited with 3", "restart": "policy"}
    assert job.restart_cause() == ""  # attempt 2 follows no recorded attempt
    job.attempt += 1  # as run.relaunch's copy becomes the next attempt
    assert job.restart_cause() == "rank 1 on node1 exited with 3"


def test_a_launch_whose_launcher_died_before_every_rank_started_is_interrupted():
    job = make_job(exit_codes=(0, 3))
    job.launcher = {"host": "elsewhere-" + "x" * 8, "process": "1 1"}  # another controller's: alive
    assert not attempts.launch_interrupted(job) and attempts.failure(job) is None
    import socket

    job.launcher = {"host": socket.gethostname(), "process": "999999999 1"}  # gone
    assert not attempts.launch_interrupted(job)  # every rank started: a plain failure
    job.ranks[1].pid = None
    assert attempts.failure(job) == "the launch of attempt 1 was interrupted"


def test_the_policy_reaches_the_request_as_the_recovery_settings(tmp_path):
    spec = {"command": ["python", "x.py"], "workdir": str(tmp_path), "restarts": 3}
    request, _ = request_from_spec(spec)
    assert request.recovery["restarts"] == 3
    request, _ = request_from_spec({**spec, "restarts": 0})
    assert "restarts" not in request.recovery  # the default is not written down


def test_a_running_job_is_watched_for_its_policy_only_while_it_may_run():
    running = make_job(state=RUNNING, exit_codes=(0, 0))
    for rank in running.ranks:
        rank.state = RUNNING
    assert attempts.refreshed_by_watch(running)
    assert not attempts.refreshed_by_watch(make_job(state=SUCCEEDED, exit_codes=(0, 0)))
