"""GPU leases on shared nodes (issue 19), on real sshd nodes that declare
`tsubmit_gpus: 4` (CPU nodes: their GPUs are ids 0..3) and each have a lease
folder of their own (the harness's `tsubmit_gpu_lease_dir`).

Two controllers are two TSUBMIT_HOMEs, as two researchers' laptops are; what
a rank leased is read where a user would look: CUDA_VISIBLE_DEVICES in its
log, `cluster usage`, the exit code and message of the job that does not fit.
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import fresh_cli
from tests.harness import SshNodes, eventually, xdist_subnet
from tests.harness.gpus import HOLD, gpu_cluster, hold_gpus, interrupted_while_queued, queued_run
from tests.harness.jobs import attempt_dir, exit_code, job_id_of, log_of
from tests.harness.sshd import DEFAULT_USER, ensure_test_user

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "roles" / "gpu_lease" / "files" / "gpu_lease.py"


@pytest.fixture
def other_cli():
    """A second controller: its own TSUBMIT_HOME, its own store, knows nothing of the first's jobs."""
    with fresh_cli() as made:
        yield made


def leased(node, job_id, rank) -> tuple[set[int], int]:
    """The GPU ids the rank's process saw, and its NPROC_PER_NODE."""
    eventually(lambda: "CVD " in log_of(node, job_id, rank), message=f"'CVD' in rank {rank}'s log",
               detail=lambda: log_of(node, job_id, rank))
    ids, nproc = log_of(node, job_id, rank).split("CVD ", 1)[1].split()[:2]
    return {int(i) for i in ids.split(",")}, int(nproc)


def usage(cli, cluster) -> dict[str, dict]:
    return {node["host"]: node for node in cli.ok("cluster", "usage", cluster, "-o", "json").json()}


def test_two_controllers_get_disjoint_gpus_and_a_third_job_exits_5_naming_the_holder(
        cli, other_cli, nodes, workdir):
    members = nodes.nodes[:2]
    gpu_cluster(nodes, members, cli, other_cli)
    first = hold_gpus(cli, "c", "--gpus", "2", "--name", "alice-job", "--workdir", str(workdir))
    second = hold_gpus(other_cli, "c", "--gpus", "2", "--name", "bob-job", "--workdir", str(workdir))
    try:
        for rank, node in enumerate(members):
            mine, theirs = leased(node, first, rank), leased(node, second, rank)
            assert mine[1] == theirs[1] == 2  # NPROC_PER_NODE is the leased count
            assert len(mine[0]) == len(theirs[0]) == 2 and not mine[0] & theirs[0]
            assert mine[0] | theirs[0] == {0, 1, 2, 3}

        third = cli("run", "-c", "c", "--executor", "distributed", "--gpus", "1", "--workdir",
                    str(workdir), "--", "python", "-c", "print('never')")
        assert third.code == 5, third.output
        assert "GPUs busy" in third.stderr and "0 of 4 GPUs free" in third.stderr
        # one line per busy node, after one naming them
        (error,) = [line for line in third.stderr.splitlines() if line.startswith("tsubmit: ")]
        assert error.endswith(f": GPUs busy on {members[0].name}, {members[1].name}"), third.stderr
        for node in members:
            assert [line for line in third.stderr.splitlines()
                    if line.startswith(f"  {node.name}: has 0 of 4 GPUs free, the job wants 1; held by ")]
        # names a holder: its job id and name, its user on the node, its controller
        assert (f"job {first} (alice-job)" in third.stderr or f"job {second} (bob-job)" in third.stderr)
        assert f"of {DEFAULT_USER}, submitted from " in third.stderr
        assert "@" in third.stderr.split("submitted from ", 1)[1].split(",")[0]
        # the job that did not fit started nothing anywhere
        assert all(nodes.processes_of(node, "never") == [] for node in members)

        # `cluster usage` reads the nodes: both controllers' jobs, from either one
        seen = usage(cli, "c")
        for node in members:
            assert seen[node.name]["gpus"] == [0, 1, 2, 3] and seen[node.name]["free"] == []
            assert {lease["job_id"] for lease in seen[node.name]["leases"]} == {first, second}
            assert {lease["user"] for lease in seen[node.name]["leases"]} == {DEFAULT_USER}
        text = other_cli.ok("cluster", "usage", "c").stdout
        assert first in text and second in text and "alice-job" in text
        assert re.search(r"node1\s+4\s+0\s", text), text
    finally:
        cli.ok("stop", first)
        other_cli.ok("stop", second)
    assert all(node["free"] == [0, 1, 2, 3] for node in usage(cli, "c").values())


def test_a_lease_half_taken_across_the_nodes_is_given_back(cli, other_cli, nodes, workdir):
    members = nodes.nodes[:2]
    gpu_cluster(nodes, members, cli, name="both")
    gpu_cluster(nodes, members[1:], other_cli, name="second")
    holder = hold_gpus(other_cli, "second", "--workdir", str(workdir))  # all 4 GPUs of node2
    try:
        run = cli("run", "-c", "both", "--executor", "distributed", "--gpus", "2", "--workdir",
                  str(workdir), "--", *HOLD)
        assert run.code == 5, run.output
        assert f"  node2: has 0 of 4 GPUs free, the job wants 2; held by job {holder}" in run.stderr
        # node1 had leased 2 GPUs: given back by the rollback, nothing of the job left there
        seen = usage(cli, "both")
        assert seen["node1"]["free"] == [0, 1, 2, 3] and seen["node1"]["leases"] == []
        assert [lease["job_id"] for lease in seen["node2"]["leases"]] == [holder]
        assert nodes.processes_of(members[0], "time.sleep") == []
        assert cli.ok("list", "-o", "json").json()[0]["state"] == "failed"
        # cluster check shows who leases the node's GPUs too
        checked = cli.ok("cluster", "check", "both", "-o", "json").json()["hosts"]
        assert f"0 of 4 free, leased by job {holder}" in checked["node2"]["gpus"]["detail"]
        assert "4 of 4 free" in checked["node1"]["gpus"]["detail"]
    finally:
        other_cli.ok("stop", holder)


def test_queue_starts_right_after_the_holder_ends(cli, other_cli, nodes, workdir):
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli, other_cli)
    holder = hold_gpus(other_cli, "c", "--gpus", "3", "--workdir", str(workdir))
    # it waits, saying for what (a timestamped line: not a terminal), and is
    # recorded only once it starts
    queued, err, _ = queued_run(cli, "c", "--gpus", "2", "--name", "waiter", "--workdir", str(workdir),
                                "--", *HOLD)
    try:
        assert queued.poll() is None
        assert cli.ok("list", "-o", "json").json() == []
        other_cli.ok("stop", holder)
        stopped_at = time.monotonic()
        out = queued.communicate(timeout=120)[0]
        err = "".join(err)
        assert queued.returncode == 0, out + err
        assert time.monotonic() - stopped_at < 30
        assert re.search(r"^\d{4}-\d\d-\d\dT[\d:]+ tsubmit: queued: GPUs busy: node1 has 1 of 4 GPUs "
                         rf"free, the job wants 2; held by job {holder}", err, re.M), err
        job_id = job_id_of(out)
        assert len(leased(node, job_id, 0)[0]) == 2
    finally:
        if queued.poll() is None:
            queued.kill()
        for job in cli.ok("list", "-o", "json").json():
            cli.ok("stop", job["id"])


def test_queue_timeout_exits_5_and_ctrl_c_while_queued_leaves_nothing(cli, nodes, workdir):
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli)
    holder = hold_gpus(cli, "c", "--workdir", str(workdir))
    before = set(node.remote_root.iterdir())
    try:
        started = time.monotonic()
        late = cli("run", "-c", "c", "--executor", "distributed", "--queue", "--queue-timeout", "5s",
                   "--workdir", str(workdir), "--", "python", "-c", "print('never')")
        assert late.code == 5, late.output
        assert "--queue-timeout" in late.stderr and f"held by job {holder}" in late.stderr
        assert time.monotonic() - started < 60

        code, err = interrupted_while_queued(cli, "c", signal.SIGINT, "--name", "ctrl-c", "--workdir",
                                             str(workdir), "--", "python", "-c", "print('never')")
        assert code == 130, err
        assert "nothing was started or recorded" in err
        jobs = cli.ok("list", "-o", "json").json()
        assert [job["id"] for job in jobs] == [holder]  # the queued job left no record
        assert set(node.remote_root.iterdir()) == before  # nor any folder on the node
        assert nodes.processes_of(node, "never") == []
    finally:
        cli.ok("stop", holder)


def test_kill_9_of_every_process_of_a_job_frees_its_gpus(cli, other_cli, nodes, workdir):
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli, other_cli)
    # torchrun: the launch script, torchrun and its workers
    run = cli.ok("run", "-c", "c", "--gpus", "2", "--workdir", str(workdir), "--", "python", "sleeper.py")
    job_id = job_id_of(run)
    eventually(lambda: len(nodes.processes_of(node, r"sleeper\.py")) >= 3,
               message="torchrun and its two workers")
    assert [lease["job_id"] for lease in usage(cli, "c")["node1"]["leases"]] == [job_id]
    marker = f"TSUBMIT_RANK_MARKER={job_id}.".encode()
    pids = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if marker in _environ(pid)]
    assert len(pids) >= 4
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    eventually(lambda: not any(marker in _environ(pid) for pid in pids), timeout=10,
               message="every killed process of the job gone")

    # nobody released anything: the lease died with the processes
    assert usage(other_cli, "c")["node1"]["free"] == [0, 1, 2, 3]
    all_four = hold_gpus(other_cli, "c", "--gpus", "4", "--workdir", str(workdir))
    try:
        assert leased(node, all_four, 0) == ({0, 1, 2, 3}, 4)
    finally:
        other_cli.ok("stop", all_four)


def test_the_lease_outlives_a_torchrun_killed_9_while_its_workers_run(cli, other_cli, nodes, workdir):
    """torchrun's workers do not hold the lease's descriptor: the rank keeps it
    until no process carrying its marker is left, not until torchrun is gone.
    Its launch script stops them (they ignore SIGTERM: SIGKILL after 30 s),
    and only then records its end and frees the lease."""
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli, other_cli)
    run = cli.ok("run", "-c", "c", "--gpus", "2", "--workdir", str(workdir), "--", "python", "sleeper.py",
                 "--ignore-term")
    job_id = job_id_of(run)
    attempt = attempt_dir(node, job_id)
    eventually(lambda: len(nodes.processes_of(node, r"^python\S* sleeper\.py")) == 2,
               message="the two sleeper.py workers")
    marker = f"TSUBMIT_RANK_MARKER={job_id}.r0.a1".encode()
    marked = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if marker in _environ(pid)]
    [torchrun] = [pid for pid in marked if b"--rdzv-backend" in _cmdline(pid)]
    try:
        os.kill(torchrun, signal.SIGKILL)
        # the rank's command has ended; its workers, which ignore the launch script's SIGTERM, live on
        eventually(lambda: not Path(f"/proc/{torchrun}").exists(), message=f"torchrun {torchrun} gone")
        assert len(nodes.processes_of(node, r"^python\S* sleeper\.py")) == 2
        assert usage(other_cli, "c")["node1"]["free"] == [2, 3]
        all_four = other_cli("run", "-c", "c", "--gpus", "4", "--executor", "distributed",
                             "--workdir", str(workdir), "--", "true")
        assert all_four.code == 5, all_four.output
        assert f"job {job_id}" in all_four.stderr
        # the rank ends once its leftovers are gone (killed), and frees its GPUs after
        exit_code(attempt)
        assert nodes.processes_of(node, r"^python\S* sleeper\.py") == []
        assert int((attempt / "leftovers").read_text()) >= 2
        eventually(lambda: usage(other_cli, "c")["node1"]["free"] == [0, 1, 2, 3],
                   message="node1's 4 GPUs free")
    finally:
        cli.ok("stop", job_id)
    assert not any(marker in _environ(pid) for pid in marked)
    assert usage(other_cli, "c")["node1"]["free"] == [0, 1, 2, 3]


def test_shell_sees_the_gpus_the_rank_leased_and_names_the_host_of_a_missing_command(
        cli, nodes, workdir):
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli)
    holder = hold_gpus(cli, "c", "--gpus", "1", "--workdir", str(workdir))
    job_id = hold_gpus(cli, "c", "--gpus", "2", "--workdir", str(workdir))
    try:
        assert leased(node, job_id, 0) == ({1, 2}, 2)
        show = ["--", "sh", "-c", 'echo "cvd=[${CUDA_VISIBLE_DEVICES-unset}]"']
        assert cli.ok("shell", job_id, *show).stdout == "cvd=[1,2]\n"
        missing = cli("shell", job_id, "--", "nvidia-smi", "-L")
        assert missing.code == 127, missing.output
        assert missing.stderr.strip() == (f"tsubmit: nvidia-smi: command not found on node1 (rank 0 of "
                                          f"job {job_id}, with the rank's PATH)"), missing.stderr
        none = cli.ok("run", "-c", "c", "--executor", "distributed", "--gpus", "0", "--wait",
                      "--workdir", str(workdir), "--", "true")
        none_id = job_id_of(none)
        assert cli.ok("shell", none_id, *show).stdout == "cvd=[]\n"
    finally:
        cli.ok("stop", holder)
        cli.ok("stop", job_id)


def test_gpus_0_opts_out_and_a_node_without_gpus_runs_as_before(cli, nodes, workdir):
    node = nodes.nodes[0]
    gpu_cluster(nodes, [node], cli)
    cli.write_cluster("plain", nodes, [node])
    holder = hold_gpus(cli, "c", "--workdir", str(workdir))  # every GPU of the node
    try:
        cpu = cli.ok("run", "-c", "c", "--executor", "distributed", "--gpus", "0", "--wait",
                     "--workdir", str(workdir), "--", "sh", "-c",
                     "echo \"cvd=[${CUDA_VISIBLE_DEVICES-unset}] nproc=$NPROC_PER_NODE\"")
        job_id = job_id_of(cpu)
        assert "cvd=[] nproc=1" in log_of(node, job_id, 0)
        # no tsubmit_gpus, no nvidia-smi: nothing to lease, --gpus is processes per node
        plain = cli.ok("run", "-c", "plain", "--executor", "distributed", "--gpus", "3", "--wait",
                       "--workdir", str(workdir), "--", "sh", "-c",
                       "echo \"cvd=[${CUDA_VISIBLE_DEVICES-unset}] nproc=$NPROC_PER_NODE\"")
        job_id = job_id_of(plain)
        assert "cvd=[unset] nproc=3" in log_of(node, job_id, 0)
        too_many = cli("run", "-c", "c", "--gpus", "5", "--workdir", str(workdir), "--", "true")
        assert too_many.code == 3, too_many.output
        assert "asks for 5 GPUs per node (--gpus) but this node has 4 (0,1,2,3)" in too_many.stderr
    finally:
        cli.ok("stop", holder)


FAKE_NVIDIA_SMI = """#!/bin/sh
# A test double: no GPU can run here. Prints what nvidia-smi --list-gpus prints on a 3-GPU box.
[ "$1" = --list-gpus ] || exit 9
echo "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-0f5b6a41-1c1e-4d64-9d1b-1b6f2a0c7a10)"
echo "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-7a1d3e52-2b2f-4e75-8e2c-2c7a3b1d8b21)"
echo "GPU 2: NVIDIA A100-SXM4-80GB (UUID: GPU-9c3e5f63-3c3a-4f86-9f3d-3d8b4c2e9c32)"
"""


def test_a_fake_nvidia_smi_gives_the_node_its_gpu_ids(cli, workdir):
    """nvidia-smi is a test double here (no GPU on CI): a script first on the node's PATH that
    prints what the real one prints; tsubmit_gpus is not declared."""
    with SshNodes(1, subnet=xdist_subnet(), first_host=240, stale_python=True) as gpu_nodes:
        fake = gpu_nodes.shim_dir / "nvidia-smi"
        fake.write_text(FAKE_NVIDIA_SMI)
        fake.chmod(0o755)
        node = gpu_nodes.nodes[0]
        cli.write_cluster("g", gpu_nodes, [node])
        assert usage(cli, "g")["node1"]["gpus"] == [0, 1, 2]
        job_id = hold_gpus(cli, "g", "--gpus", "2", "--workdir", str(workdir))
        try:
            assert leased(node, job_id, 0) == ({0, 1}, 2)
            assert usage(cli, "g")["node1"]["free"] == [2]
        finally:
            cli.ok("stop", job_id)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# scripts/setup-ssh-nodes.sh creates it; the harness too when it is missing.
SECOND_USER = "tsubmit-test2"


def test_two_users_on_one_node_neither_steals_nor_frees_the_others_lease(tmp_path):
    """The lease helper itself, as two real unprivileged users sharing one lease folder."""
    ensure_test_user(DEFAULT_USER)
    ensure_test_user(SECOND_USER)
    shared = tmp_path / "shm"
    shared.mkdir()
    shared.chmod(0o1777)
    for parent in (tmp_path, *tmp_path.parents):
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o001)  # traversable by the test users
    helper = tmp_path / "gpu_lease.py"
    shutil.copy(HELPER, helper)
    helper.chmod(0o644)
    folder = shared / "leases"
    folder.mkdir()
    folder.chmod(0o1777)  # root's, as `cluster check --fix` makes it

    def hold(user: str, name: str, count: int) -> subprocess.Popen:
        script = (f'exec 9>"{folder}/{name}" && {sys.executable} {helper} take {folder} {name} '
                  f'{count} 0,1,2,3 9 /nonexistent && exec sleep 600')
        return subprocess.Popen(["runuser", "-u", user, "--", "sh", "-c", script], start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def kill(holder: subprocess.Popen) -> None:
        """kill -9 of every process of the holder (runuser, its shell, sleep)."""
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()

    def as_user(user: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", user, "--", *args], capture_output=True, text=True)

    def read(user: str) -> dict:
        return json.loads(as_user(user, sys.executable, str(helper), "usage", str(folder), "4").stdout)

    alice = hold(DEFAULT_USER, "a.r0.a1.lease", 2)
    try:
        assert alice.stdout.readline().strip() == "0,1"
        # bob cannot have alice's GPUs: 3 do not fit, 2 do (the other two)
        greedy = hold(SECOND_USER, "b.r0.a1.lease", 3)
        assert greedy.wait(timeout=30) == 5
        assert json.loads(greedy.stdout.read())["free"] == [2, 3]
        bob = hold(SECOND_USER, "c.r0.a1.lease", 2)
        try:
            assert bob.stdout.readline().strip() == "2,3"
            # nor free it: not remove it, not overwrite it, not truncate it
            lease = folder / "a.r0.a1.lease"
            assert as_user(SECOND_USER, "rm", "-f", str(lease)).returncode != 0
            assert as_user(SECOND_USER, "sh", "-c", f"echo '{{}}' > {lease}").returncode != 0
            assert as_user(SECOND_USER, "mv", str(lease), str(folder / "mine.lease")).returncode != 0
            assert json.loads(lease.read_text())["gpus"] == [0, 1]
            seen = read(SECOND_USER)
            assert seen["free"] == [] and {x["user"]: x["gpus"] for x in seen["leases"]} == {
                DEFAULT_USER: [0, 1], SECOND_USER: [2, 3]}
        finally:
            kill(bob)
        # bob's lease died with his process: free for alice, though bob's file stays (his to remove)
        assert (folder / "c.r0.a1.lease").exists()
        seen = read(DEFAULT_USER)
        assert seen["free"] == [2, 3] and [x["user"] for x in seen["leases"]] == [DEFAULT_USER]
        again = hold(DEFAULT_USER, "d.r0.a1.lease", 2)
        try:
            assert again.stdout.readline().strip() == "2,3"
        finally:
            kill(again)
    finally:
        kill(alice)


def test_a_lease_folder_another_user_made_is_refused_by_the_helper(tmp_path):
    """The owner of a sticky folder may remove anyone's lease in it: bob made the
    folder, so alice is refused there (exit 3 naming it, bob, the fix)."""
    ensure_test_user(DEFAULT_USER)
    bob = ensure_test_user(SECOND_USER)
    for parent in (tmp_path, *tmp_path.parents):
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o001)
    helper = tmp_path / "gpu_lease.py"
    shutil.copy(HELPER, helper)
    helper.chmod(0o644)
    folder = tmp_path / "leases"
    folder.mkdir()
    folder.chmod(0o1777)
    os.chown(folder, bob.pw_uid, bob.pw_gid)
    for args in (["folder", str(folder)], ["usage", str(folder), "4"]):
        alice = subprocess.run(["runuser", "-u", DEFAULT_USER, "--", sys.executable, str(helper), *args],
                               capture_output=True, text=True)
        assert alice.returncode == 3, alice
        assert (f"the GPU lease folder {folder} is owned by {SECOND_USER}, not root: {SECOND_USER} could "
                "remove every other user's leases" in alice.stderr), alice.stderr
        assert "tsubmit cluster check --fix" in alice.stderr
    assert list(folder.iterdir()) == []


def test_a_lease_folder_another_user_owns_fails_the_launch_and_cluster_check(cli, nodes, workdir):
    node = nodes.nodes[0]
    bob = ensure_test_user(SECOND_USER)
    bobs = node.lease_dir.parent / "bobs-leases"  # as /dev/shm/tsubmit-gpu-leases made by bob
    bobs.mkdir()
    bobs.chmod(0o1777)
    os.chown(bobs, bob.pw_uid, bob.pw_gid)
    cli.write_cluster("c", nodes, [node], tsubmit_gpus=4, tsubmit_gpu_lease_dir=str(bobs))
    try:
        run = cli("run", "-c", "c", "--gpus", "1", "--executor", "distributed", "--workdir", str(workdir),
                  "--", "python", "sleeper.py")
        assert run.code == 3, run.output
        assert "node1" in run.stderr
        assert f"{bobs} is owned by {SECOND_USER}, not root" in run.stderr, run.stderr
        assert "tsubmit cluster check --fix" in run.stderr
        assert nodes.processes_of(node, r"sleeper\.py") == []
        assert list(bobs.iterdir()) == []  # not even a lease file left in bob's folder
        check = cli("cluster", "check", "c")
        assert check.code == 3, check.output
        assert (f"FAIL node1 gpus: the GPU lease folder {bobs} is owned by {SECOND_USER}"
                in check.stdout), check.stdout
        # without a way to become root, --fix says so, naming the host
        fix = cli("cluster", "check", "c", "--fix")
        assert fix.code == 3, fix.output
        assert "FAIL node1 gpus: cannot make the shared GPU lease folder as root" in fix.stdout, fix.stdout
    finally:
        shutil.rmtree(bobs)


def test_without_a_shared_lease_folder_a_user_leases_in_their_own_and_is_told_so(cli, nodes, workdir):
    node = nodes.nodes[0]
    missing = node.lease_dir.parent / "no-leases-yet"  # as /dev/shm/tsubmit-gpu-leases before --fix
    own = Path(f"{missing}-{DEFAULT_USER}")
    cli.write_cluster("c", nodes, [node], tsubmit_gpus=4, tsubmit_gpu_lease_dir=str(missing))
    job_id = None
    try:
        job_id = hold_gpus(cli, "c", "--gpus", "1", "--workdir", str(workdir))
        assert leased(node, job_id, 0) == ({0}, 1)
        assert not missing.exists()  # only root makes the shared one
        assert own.stat().st_uid == ensure_test_user(DEFAULT_USER).pw_uid
        assert f"leasing in {own}, which shares with no one" in log_of(node, job_id, 0)
        [seen] = cli.ok("cluster", "usage", "c", "-o", "json").json()
        assert (seen["lease_dir"], seen["shared"], seen["free"]) == (str(own), False, [1, 2, 3])
        check = cli("cluster", "check", "c")
        assert check.code == 0, check.output
        assert "warn node1 gpus:" in check.stdout and "shares with no one" in check.stdout, check.stdout
    finally:
        if job_id:
            cli.ok("stop", job_id)
        shutil.rmtree(own, ignore_errors=True)


def test_hosts_of_one_machine_sharing_a_lease_folder_are_named_with_the_fix(cli, nodes, workdir):
    """Two sshd nodes of this machine given one lease folder, as loopback nodes or VMs
    sharing /dev/shm are: the job's own ranks would compete for its GPUs."""
    first, second = nodes.nodes[:2]
    cli.write_cluster("one", nodes, [first, second], tsubmit_gpus=2,
                      tsubmit_gpu_lease_dir=str(first.lease_dir))
    run = cli("run", "-c", "one", "--gpus", "2", "--executor", "distributed", "--queue", "--workdir",
              str(workdir), "--", "python", "sleeper.py")
    assert run.code == 3, run.output  # not 5, and --queue does not wait: it would never fit
    shared = re.escape(str(first.lease_dir))
    assert re.search(rf"node[12] and node[12] are one machine sharing the GPU lease folder {shared}, so "
                     "the job's own ranks compete", run.stderr), run.stderr
    assert "tsubmit cluster edit one --host node" in run.stderr
    for node in (first, second):
        assert nodes.processes_of(node, r"sleeper\.py") == []
    assert usage(cli, "one")["node1"]["free"] == [0, 1]
    check = cli.ok("cluster", "check", "one")
    assert "warn node1 gpus:" in check.stdout and "the same machine as node2 (one boot id)" in check.stdout
    assert f"tsubmit cluster edit one --host node2 --lease-dir {first.lease_dir}-node2" in check.stdout

    # the fix: node2 leases in a folder of its own
    cli.ok("cluster", "edit", "one", "--host", "node2", "--lease-dir", str(second.lease_dir))
    job_id = hold_gpus(cli, "one", "--gpus", "2", "--workdir", str(workdir))
    try:
        assert leased(first, job_id, 0) == ({0, 1}, 2) and leased(second, job_id, 1) == ({0, 1}, 2)
        assert "same machine" not in cli.ok("cluster", "check", "one").stdout
    finally:
        cli.ok("stop", job_id)


def test_cluster_check_fix_makes_the_shared_lease_folder_roots(cli, tmp_path):
    """--fix as root, on this machine (ansible_connection local, as the embedded `local`
    cluster): no test node's user may become root (no sudo here), so the sshd nodes
    show only its failure (test_a_lease_folder_another_user_owns_fails_the_launch_...)."""
    bob = ensure_test_user(SECOND_USER)
    shm = tmp_path / "shm"
    shm.mkdir()
    shm.chmod(0o1777)
    folder = shm / "tsubmit-gpu-leases"
    folder.mkdir()
    os.chown(folder, bob.pw_uid, bob.pw_gid)  # made by bob, as an older tsubmit did
    inventory = tmp_path / "here.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "tsubmit_python": sys.executable, "tsubmit_gpus": 2, "tsubmit_gpu_lease_dir": str(folder)}}}}))
    refused = cli("cluster", "check", "-i", str(inventory))
    assert f"is owned by {SECOND_USER}, not root" in refused.stdout, refused.output
    fixed = cli("cluster", "check", "-i", str(inventory), "--fix")
    assert "lease folder" not in fixed.stdout, fixed.output
    assert (folder.stat().st_uid, stat.S_IMODE(folder.stat().st_mode)) == (0, 0o1777)
    lock = folder / ".lock"
    assert (lock.stat().st_uid, stat.S_IMODE(lock.stat().st_mode)) == (0, 0o644)
    assert "lease folder" not in cli("cluster", "check", "-i", str(inventory)).stdout
