"""What each notification says (tsubmit/jobs/notify.py compose): the events of the
watcher acting on a job (restarted, hung, lost_node), and which events a job
notifies of."""

import json

import pytest

from tsubmit.errors import UsageError
from tsubmit.jobs import notify, postmortem
from tsubmit.model.job import FAILED, RUNNING, STOPPED, UNREACHABLE, Job, Rank


def three_rank_job(**recovery) -> Job:
    return Job(id="abc123", name="nightly", cluster="gpus", inventory={"sources": []}, executor="torchrun",
               command=["python", "train.py"], workdir="/tmp", state=RUNNING, gpus=2,
               extras={"notify": {"urls": ["json://127.0.0.1:9/hook"], "on": list(notify.EVENTS)},
                       "recovery": recovery},
               ranks=[Rank(0, "node1", "10.0.0.11", state=RUNNING, started_at=100.0),
                      Rank(1, "node2", "10.0.0.12", state=RUNNING, started_at=100.0),
                      Rank(2, "node3", "10.0.0.13", state=RUNNING, started_at=100.0)])


def hang_report(job: Job) -> dict:
    """A post-mortem as postmortem.collect keeps it: rank 1 stuck in a collective."""
    def rank(number: int, frame: str) -> dict:
        return {"rank": number, "host": f"node{number + 1}", "address": f"10.0.0.1{number + 1}",
                "state": "running", "exit_code": None, "log": [], "missing": [],
                "processes": [{"pid": 40 + number, "user": "alice", "state": "S", "wchan": "do_poll",
                               "cmdline": "python train.py", "python": True,
                               "py_spy": f"Thread {40 + number} (idle)\n    {frame}\n"
                                         "    <module> (train.py:30)\n"}]}
    return {"job": job.id, "name": job.name, "attempt": job.attempt, "reason": "hang", "collected_at": 1.0,
            "nodes": {}, "ranks": [rank(0, "allreduce (torch/distributed/c10d.py:2050)"),
                                   rank(1, "load_batch (train.py:12)"),
                                   rank(2, "allreduce (torch/distributed/c10d.py:2050)")]}


def test_a_restart_names_its_attempt_its_cause_and_the_restarts_used():
    job = three_rank_job(restarts=3)
    job.attempt = 2
    job.attempts = [{"attempt": 1, "started_at": 10.0, "ended_at": 70.0, "restart": "policy",
                     "cause": "rank 1 on node2 exited with 7"}]
    message = notify.compose(job, "restarted")  # the cause: the attempt before's, as recorded
    assert message["title"] == ("tsubmit: job nightly (abc123) restarted as attempt 2 after rank 1 on node2 "
                                "exited with 7")
    body = message["body"].splitlines()
    assert body[:4] == ["job: nightly (abc123)", "cluster: gpus", "state: restarted", "attempt: 2"]
    assert body[4].startswith("wall time: ") and notify.wall_time(job) > 60  # attempt 1's minute too
    assert body[-2:] == ["cause: rank 1 on node2 exited with 7", "restarts: 1 of 3"]


def test_a_hang_names_the_hung_ranks_and_where_their_stacks_stand(monkeypatch, tmp_path):
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path))
    job = three_rank_job(hang_timeout=300.0)
    postmortem.path(job.id, 1).parent.mkdir(parents=True)
    postmortem.path(job.id, 1).write_text(json.dumps(hang_report(job)))  # as collect keeps it
    message = notify.compose(job, "hung", ranks=[1])
    assert message["title"] == ("tsubmit: job nightly (abc123) hung: rank 1: log silent for 5m00s "
                                "(--hang-timeout)")
    assert message["body"].splitlines()[6:] == [
        "hung: rank 1: log silent for 5m00s (--hang-timeout)",
        "where their stacks stand:",
        "rank 1 on node2: running; pid 41 in load_batch (train.py:12)",
        "the whole post-mortem: tsubmit postmortem abc123 --attempt 1"]


def test_a_hang_without_named_ranks_names_every_running_rank_of_the_report_given():
    job = three_rank_job()
    report = hang_report(job)
    report["ranks"][2]["state"] = "stopped"
    body = notify.compose(job, "hung", report=report)["body"]
    assert "hung: rank 0, 1: log silent\n" in body
    assert "rank 0 on node1: running; pid 40 in allreduce (torch/distributed/c10d.py:2050)" in body
    assert "node3" not in body


def test_a_hang_whose_post_mortem_was_not_kept_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path))
    body = notify.compose(three_rank_job(), "hung", ranks=[2])["body"]
    assert body.endswith("hung: rank 2: log silent\nno post-mortem was kept of this attempt")


def test_a_lost_node_names_its_host_its_address_its_rank_and_the_node_timeout():
    job = three_rank_job(node_timeout=120.0)
    job.ranks[2].state = UNREACHABLE
    message = notify.compose(job, "lost_node")  # the lost hosts: those whose ranks are unreachable
    assert message["title"] == "tsubmit: job nightly (abc123) lost node: node3 (address 10.0.0.13)"
    assert message["body"].splitlines()[-1] == ("lost node: node3 (address 10.0.0.13), rank 2, silent for "
                                                "longer than 2m00s (--node-timeout)")
    named = notify.compose(job, "lost_node", hosts=["node1", "node3"])["body"].splitlines()
    assert named[-2:] == ["lost node: node1 (address 10.0.0.11), rank 0, silent for longer than 2m00s "
                          "(--node-timeout)",
                          "lost node: node3 (address 10.0.0.13), rank 2, silent for longer than 2m00s "
                          "(--node-timeout)"]


def test_a_failure_no_rank_caused_gives_the_job_s_message_as_its_cause():
    job = three_rank_job()
    job.state = FAILED
    for rank in job.ranks:
        rank.state = STOPPED
    job.message = "hung: rank 1 on node2 wrote no log line for 5m00s; restarts exhausted (3)"
    message = notify.compose(job, "failed")
    assert message["title"].endswith(f"failed: {job.message}")
    assert message["body"].endswith(f"cause: {job.message}")


def test_record_passes_the_details_and_keeps_only_the_events_the_job_notifies_of():
    job = three_rank_job(restarts=1)
    job.attempt = 2
    job.extras["notify"]["on"] = ["restarted"]
    assert notify.record(job, "restarted", cause="node node3 lost")
    assert not notify.record(job, "hung", ranks=[1])
    [pending] = notify.pending(job)
    assert pending["event"] == "restarted" and "cause: node node3 lost" in pending["body"]


def test_the_default_events_are_every_event_and_end_is_both_ends():
    url = "json://127.0.0.1:9/hook"
    assert notify.settings([url], None)["on"] == [
        "started", "succeeded", "failed", "restarted", "hung", "lost_node"]
    assert notify.settings([url], ["end", "hung", "lost_node"])["on"] == [
        "succeeded", "failed", "hung", "lost_node"]
    with pytest.raises(UsageError, match=r"unknown event 'hang'; choose from started, succeeded, failed, "
                                         r"restarted, hung, lost_node, end"):
        notify.settings([url], ["hang"])


def test_a_failed_attempt_the_policy_restarts_is_not_notified_and_its_tails_are_held(monkeypatch, tmp_path):
    """The final failure's message (recovery._fail) has the lines the refresh that
    saw the attempt fail read, cut before torchrun's traceback, not the raw log."""
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path))
    from tsubmit.jobs import recovery

    job = three_rank_job(restarts=1)
    job.state, job.ranks[1].state, job.ranks[1].exit_code = FAILED, FAILED, 7
    assert not notify.observe(job, RUNNING, {0: [], 1: ["worker 1: out of patience"]})
    assert notify.pending(job) == []
    job.extras = json.loads(json.dumps(job.extras))  # as the store keeps it
    assert recovery._tails(job) == notify.held_tails(job) == {1: ["worker 1: out of patience"]}
    job.attempt = 2  # held for attempt 1 only
    assert notify.held_tails(job) == {}
