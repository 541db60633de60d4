"""The node_lib role's tsubmit_procs.py reaches the scripts that import it even
when the role shipping it was replaced from TSUBMIT_ANSIBLE_PATH (the copy in
the ops folder has no node_lib beside it): status finds it on the roles path."""

import shutil

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_a_replaced_status_role_still_ships_the_pid_helper(cli, nodes, workdir, tmp_path):
    ops = tmp_path / "ops"
    shutil.copytree(REPO / "roles" / "status", ops / "status")
    assert not (ops / "node_lib").exists()
    cli.env["TSUBMIT_ANSIBLE_PATH"] = str(ops)
    assert cli.ok("ansible-info", "-o", "json").json()["roles"]["status"]["overridden"]
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "ops-status", "--wait",
              "--workdir", str(workdir), "--", "python", "-c", "print('done')")
    assert run.code == 0, run.output
    assert cli.status_runs() > 0, "--wait read the ranks' state through the status role"
    shown = cli.ok("status", "ops-status", "-o", "json").json()
    assert shown["state"] == "succeeded", shown
    assert [rank["state"] for rank in shown["ranks"]] == ["succeeded"], shown
