"""Self-test of eventually(): it returns what the condition found, and a wait
that times out names what it awaited, what it last saw and the detail asked for."""

import itertools
from pathlib import Path

import pytest

from .jobs import job_id_of
from .waiting import eventually


def test_eventually_returns_the_first_true_value_of_the_condition():
    calls = itertools.count()
    assert eventually(lambda: next(calls) >= 3 and "ready", interval=0, message="three calls") == "ready"
    assert next(calls) == 4


def test_a_wait_that_times_out_names_what_it_awaited_and_what_it_saw():
    with pytest.raises(AssertionError) as failed:
        eventually(lambda: [], timeout=0.05, interval=0.01, message="a process of the job",
                   detail=lambda: "its log:\nstarting")
    assert str(failed.value) == ("timed out after 0.05s waiting for: a process of the job\n"
                                 "last seen: []\nits log:\nstarting")


def test_a_detail_that_fails_does_not_hide_the_timeout():
    missing = Path("/nonexistent/log")
    with pytest.raises(AssertionError, match=r"^timed out after 0s waiting for: x\n\(no detail: FileNotF"):
        eventually(lambda: False, timeout=0, message="x", detail=missing.read_text)


def test_an_error_of_the_condition_ends_the_wait_at_once():
    with pytest.raises(ZeroDivisionError):
        eventually(lambda: 1 / 0, timeout=60, message="never")


@pytest.mark.parametrize("output", ["job 0123abcdef (bold-otter-12) running on 2 node(s) of c\n",
                                    "node2: failed\ntsubmit: launch of job 0123abcdef failed; nothing left"])
def test_job_id_of_reads_the_id_run_prints(output):
    assert job_id_of(output) == "0123abcdef"


def test_job_id_of_names_the_output_without_one():
    with pytest.raises(AssertionError, match="no job id in:\nnothing started"):
        job_id_of("nothing started")
