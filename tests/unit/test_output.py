"""How messages say counts and states (issue 26, item 19: "1 files", "is succeeded")."""

from tsubmit.output import counted, state_phrase


def test_counts_take_the_singular_for_one():
    assert counted(1, "file") == "1 file"
    assert counted(0, "file") == "0 files"
    assert counted(2, "process", "processes") == "2 processes"
    assert counted(1, "process", "processes") == "1 process"


def test_ended_states_read_as_a_sentence():
    assert state_phrase("succeeded") == "has succeeded"
    assert state_phrase("failed") == "has failed"
    assert state_phrase("stopped") == "is stopped"
    assert state_phrase("running") == "is running"
