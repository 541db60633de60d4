"""What the controller makes of the nodes' lease reports (tsubmit/nodes/gpu_leases.py)."""

import json

import pytest

from tsubmit.errors import LaunchError
from tsubmit.nodes.gpu_leases import (
    BUSY_MARK,
    GpusBusy,
    NodeUsage,
    busy_message,
    busy_nodes,
    busy_report,
    short_of,
)

LEASE = {"job_id": "abc123def0", "job_name": "resnet", "submitted_by": "alice@laptop", "gpus": [0, 1],
         "since": 0, "user": "alice", "lease": "abc123def0.r1.a2.lease"}
REPORT = {"host": "gpu1", "gpus": [0, 1, 2, 3], "free": [2, 3], "leases": [LEASE], "wanted": 4}


def busy_failure(report: dict) -> str:
    # As the launch step's failure reaches the controller: the last line of stderr.
    return BUSY_MARK + json.dumps(report)


def test_a_busy_node_names_the_holder_its_user_and_controller():
    message = busy_message({"gpu1": busy_report(busy_failure(REPORT))})
    assert message.startswith("GPUs busy: gpu1 has 2 of 4 GPUs free, the job wants 4; held by ")
    assert "job abc123def0 (resnet) rank 1 of alice, submitted from alice@laptop, GPUs 0,1 since " in message


def test_the_busy_error_names_the_nodes_and_gives_each_its_own_line():
    """It was one ~600-character line for two nodes (issue 26, item 19)."""
    error = GpusBusy("nothing was started", {"gpu1": REPORT, "gpu2": {**REPORT, "free": []}})
    assert str(error) == "nothing was started: GPUs busy on gpu1, gpu2"
    assert list(error.host_errors) == ["gpu1", "gpu2"]
    assert error.host_errors["gpu2"].startswith("has 0 of 4 GPUs free, the job wants 4; held by job ")
    assert all("\n" not in line and "gpu1" not in line for line in error.host_errors.values())


def test_busy_only_when_every_failure_is_a_busy_node():
    assert busy_nodes({"gpu1": busy_failure(REPORT)}) == {"gpu1": REPORT}
    # another node failing for another reason is a launch failure (exit 3), not busy
    assert busy_nodes({"gpu1": busy_failure(REPORT), "gpu2": "cannot create the remote root"}) == {}
    assert busy_nodes({}) == {}
    assert busy_report("tsubmit-gpus-busy {not json") is None


def test_short_of_counts_what_each_node_can_lease_now():
    usages = [NodeUsage("gpu1", {**REPORT, "free": [2, 3]}),
              NodeUsage("gpu2", {**REPORT, "free": [0, 1, 2, 3]}),
              NodeUsage("cpu", {**REPORT, "gpus": [], "free": []})]
    assert set(short_of(usages, 2)) == set()
    assert set(short_of(usages, 3)) == {"gpu1"}
    assert set(short_of(usages, None)) == {"gpu1"}  # all of the node's: 4 wanted there
    assert short_of(usages, None)["gpu1"]["wanted"] == 4
    with pytest.raises(LaunchError, match="cannot read the GPU leases") as info:
        short_of([NodeUsage("gone", None, "unreachable")], 1)
    assert info.value.host_errors == {"gone": "unreachable"}
