"""Job and rank states (tsubmit/model/states.py): one type, the changes it allows."""

import pytest

from tsubmit.model.job import Job, Rank
from tsubmit.model.states import FINISHED_STATES, IllegalTransition, State


def make_job(state=State.RUNNING) -> Job:
    return Job(id="j", name="n", cluster="local", inventory={"sources": []}, executor="distributed",
               command=["true"], workdir="/tmp", state=state,
               ranks=[Rank(0, "node0", "127.0.0.1", state=state), Rank(1, "node1", "127.0.0.2", state=state)])


def test_a_record_read_from_the_store_holds_states_not_strings():
    job = Job(**{**make_job().__dict__, "state": "failed", "ranks": [Rank(0, "h", "a", state="lost")]})
    assert job.state is State.FAILED and job.ranks[0].state is State.LOST
    assert job.state == "failed"  # what the store and the JSON output hold
    with pytest.raises(ValueError):
        Rank(0, "h", "a", state="exploded")


def test_terminal_states():
    assert {state for state in State if state.is_terminal} == FINISHED_STATES
    assert not State.STOPPING.is_terminal and not State.UNREACHABLE.is_terminal


@pytest.mark.parametrize("before, after", [
    ("starting", "running"), ("running", "unreachable"), ("unreachable", "running"),
    ("unreachable", "succeeded"), ("running", "lost"), ("running", "running"), ("failed", "starting"),
])
def test_a_rank_moves_as_its_node_says_and_starts_again_only_as_the_next_attempt(before, after):
    rank = Rank(0, "h", "a", state=before)
    rank.move_to(after)
    assert rank.state == after


@pytest.mark.parametrize("before, after", [
    ("succeeded", "running"), ("failed", "stopped"), ("lost", "unreachable"), ("stopped", "failed"),
    ("running", "stopping"), ("running", "deleted"),
])
def test_a_rank_that_ended_ends_once(before, after):
    rank = Rank(0, "h", "a", state=before)
    with pytest.raises(IllegalTransition, match=f"a rank cannot go from {before} to {after}"):
        rank.move_to(after)
    assert rank.state == before


@pytest.mark.parametrize("before, after, allowed", [
    ("starting", "running", True), ("running", "stopping", True), ("stopping", "stopped", True),
    ("succeeded", "stopping", True), ("failed", "deleted", True), ("stopped", "starting", True),
    ("running", "starting", False), ("succeeded", "failed", False), ("deleted", "running", False),
    ("stopped", "running", False),
])
def test_job_transitions(before, after, allowed):
    job = make_job(before)
    if allowed:
        job.move_to(after)
        assert job.state == after
    else:
        with pytest.raises(IllegalTransition):
            job.move_to(after)


def test_the_next_attempt_starts_every_rank_again_on_the_nodes_given():
    job = make_job(State.FAILED)
    job.message, job.ended_at = "x", 1.0
    job.start_next_attempt([Rank(0, "node0", "127.0.0.1"), Rank(1, "spare", "127.0.0.9")])
    assert (job.attempt, job.state, job.message, job.ended_at) == (2, State.STARTING, "", None)
    assert [(rank.rank, rank.host, rank.state, rank.attempt) for rank in job.ranks] == [
        (0, "node0", State.STARTING, 2), (1, "spare", State.STARTING, 2)]
    with pytest.raises(IllegalTransition):  # a job that runs has no next attempt
        make_job(State.RUNNING).start_next_attempt([])


def test_a_rank_whose_node_answers_again_is_no_longer_silent():
    rank = Rank(0, "h", "a", state=State.RUNNING)
    rank.move_to(State.UNREACHABLE)
    rank.unreachable_since = 100.0
    rank.move_to(State.UNREACHABLE)  # still silent: since when is kept
    assert rank.unreachable_since == 100.0
    rank.move_to(State.RUNNING)
    assert rank.unreachable_since is None
