"""A node whose disk is full: the launch fails with exit 3 and says "no space
left on HOST in REMOTE_ROOT" with the tool's own line, never only tar's
"Exiting with failure status"; nothing of the job is left on any node.

The node's remote root is a real file system of 2 MiB (a tmpfs the harness,
which runs as root, mounts for the node's user), filled by the shipped
archive or by the tree it unpacks to."""

import os
import pwd
import subprocess

import pytest

from tests.harness.jobs import job_processes

pytestmark = pytest.mark.e2e

EXIT_LAUNCH = 3


@pytest.fixture
def small_root(nodes, tmp_path):
    """A 2 MiB tmpfs owned by the nodes' user, beside the second node's own root."""
    node = nodes.nodes[1]
    mount = node.remote_root.parent / f"small-{tmp_path.name}"
    mount.mkdir()
    account = pwd.getpwnam(node.user)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=2m,mode=0755,uid={account.pw_uid},"
                    f"gid={account.pw_gid}", "tsubmit-small-root", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


# 3 MiB that do not compress: the shipped archive itself does not fit. 4 MiB
# of zeros: the archive (a few KiB) fits, the tree unpacked from it does not.
# 17 MiB that do not compress: the archive goes by the connection's file
# transfer (over 16 MiB, run_script's INLINE_LIMIT), which fails.
@pytest.mark.parametrize("content", [os.urandom(3 << 20), bytes(4 << 20), os.urandom(17 << 20)],
                         ids=["archive", "tree", "transferred archive"])
def test_a_full_disk_on_a_node_is_named_with_the_host_and_its_remote_root(cli, nodes, workdir,
                                                                          small_root, content):
    (workdir / "data.bin").write_bytes(content)
    head, full = nodes.nodes[:2]
    path = cli.write_cluster("c", nodes, [head, full])
    path.write_text(path.read_text().replace(str(full.remote_root), str(small_root)))
    result = cli("run", "-c", "c", "--executor", "distributed", "--workdir", str(workdir),
                 "--", "python", "sleeper.py")
    assert result.code == EXIT_LAUNCH, result.output
    assert f"  {full.name}: no space left on {full.name} in {small_root} (" in result.stderr
    assert "No space left on device)" in result.stderr
    assert "Exiting with failure status" not in result.stderr
    [job] = cli.ok("list", "-o", "json").json()
    assert job["state"] == "failed"
    assert job_processes(job["id"]) == []
    for root in (head.remote_root, small_root):
        assert not (root / job["id"]).exists()
