"""Pending notifications in a real job store, sent to a real local HTTP server."""

import time

from tests.harness.endpoints import Webhook
from tsubmit.jobs import notify
from tsubmit.local.store import JobStore
from tsubmit.model.job import FAILED, Job, Rank


def job_with(url: str, *messages) -> Job:
    return Job(id="abc", name="n", cluster="c", inventory={"sources": []}, executor="distributed",
               command=["true"], workdir="/tmp", state=FAILED,
               extras={"notify": {"urls": [url], "on": ["failed"], "pending": list(messages)}},
               ranks=[Rank(0, "node1", "127.0.0.2")])


def message(at: float) -> dict:
    return {"event": "failed", "at": at, "title": "t", "body": "b", "to": [0], "tries": 0, "error": None}


def test_a_message_not_delivered_within_a_day_is_dropped_unsent(tmp_path):
    hook = Webhook()
    try:
        store = JobStore(tmp_path / "jobs.sqlite")
        job = job_with(hook.url, message(time.time() - notify.KEEP_FOR - 1), message(time.time()))
        store.save(job)
        heard = []
        notify.deliver(store, [job], say=heard.append)
        assert len(hook.bodies) == 1
        assert any("dropped the failed notification of job abc" in line for line in heard)
        [saved] = store.jobs()
        assert notify.pending(saved) == []
    finally:
        hook.close()


def test_a_masked_url_shows_its_scheme_only():
    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    shown = notify.mask(url)
    assert shown.startswith("slack://*** (") and "T1JJ" not in shown
    assert notify.mask(url) != notify.mask(url + "x")


def test_the_first_failure_is_the_rank_that_ended_first_not_the_lowest():
    job = job_with("json://127.0.0.1:9")
    job.ranks = [Rank(0, "node1", "a", state=FAILED, exit_code=1, ended_at=10.5),
                 Rank(1, "node2", "b", state=FAILED, exit_code=7, ended_at=10.2),
                 Rank(2, "node3", "c", state="lost")]
    assert job.first_failure().rank == 1
    job.ranks[1].cause = {"worker_rank": 3, "local_rank": 1, "exit_code": 7, "launcher_exit_code": 1}
    assert job.ranks[1].reason() == "exited with 7 (worker rank 3, local rank 1)"
    assert notify.compose(job, "failed", {1: ["boom"]})["body"].endswith(
        "first failed rank: 1 on node2 (address b), exited with 7 (worker rank 3, local rank 1)\n"
        "exit code: 7\nlast 1 line of rank 1's log:\nboom")
