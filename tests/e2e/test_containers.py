"""Jobs in containers on real sshd nodes, with a real engine: rootless podman
(with runc) run by the nodes' user, and an image built locally by the harness.

The sandbox these tests run in needs ulimit flags and --shm-size instead of
--ipc host for rootless podman; they are passed through
tsubmit_container_run_args, the mechanism a site would use.
"""

import os
import subprocess

import pytest

from tests.harness import eventually
from tests.harness.images import build_image, container_cluster
from tests.harness.jobs import attempt_dir, job_id_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def image(nodes):
    return build_image(nodes.nodes[0].user)


def podman(nodes, *args) -> str:
    return subprocess.run(["runuser", "-u", nodes.nodes[0].user, "--", "podman", *args], cwd="/",
                          capture_output=True, text=True, check=True).stdout


def test_two_node_job_in_a_container_sees_the_contract_and_the_tree(cli, nodes, workdir, image):
    container_cluster(cli, nodes)
    run = cli("run", "-c", "c", "--image", image, "--executor", "docker", "--wait",
              "--env", "JOB_SECRET=s3cret value", "--workdir", str(workdir), "--",
              "sh", "-c", "env | sort; echo FILES; ls -a")
    assert run.code == 0, run.output
    job = job_id_of(run)
    head, worker = nodes.nodes[0], nodes.nodes[1]
    for rank in (0, 1):
        log = cli.ok("logs", job, "--rank", str(rank)).stdout
        env = dict(line.split("=", 1) for line in log.split("FILES")[0].splitlines() if "=" in line)
        assert "MASTER_ADDR" in env, f"rank {rank}'s log, read back:\n{log}"  # seen once in CI, unexplained
        assert env["MASTER_ADDR"] == head.address and env["MASTER_PORT"].isdigit()
        assert env["WORLD_SIZE"] == "2" and env["NNODES"] == "2" and env["NODE_RANK"] == str(rank)
        assert env["NPROC_PER_NODE"] == env["LOCAL_WORLD_SIZE"] == "1"
        assert env["RANK"] == str(rank) and env["LOCAL_RANK"] == "0"
        assert env["TSUBMIT_JOB_ID"] == job and env["TSUBMIT_ATTEMPT"] == "1"
        assert env["TSUBMIT_NODE_IPS"] == f"{head.address},{worker.address}"
        assert env["TSUBMIT_HOSTFILE"].endswith(f"/{job}/hostfile")
        assert env["JOB_SECRET"] == "s3cret value"
        assert "show_env.py" in log.split("FILES")[1] and ".tsubmit" in log.split("FILES")[1]
    # the secret went through a 0600 env file, not the command line
    env_file = attempt_dir(head, job) / "container.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "s3cret" not in (attempt_dir(head, job) / "output.log").read_text() \
        .split("FILES")[1]
    assert podman(nodes, "ps", "--all", "--quiet", "--filter", f"label=tsubmit.job={job}") == ""


def test_a_container_exiting_3_on_rank_1_fails_the_job(cli, nodes, workdir, image):
    container_cluster(cli, nodes)
    run = cli("run", "-c", "c", "--image", image, "--executor", "distributed", "--wait",
              "--workdir", str(workdir), "--", "sh", "-c", "exit $((NODE_RANK * 3))")
    assert run.code == 1, run.output
    job = cli.job(job_id_of(run))
    assert job["state"] == "failed" and job["message"] == "rank 1 on node2 exited with 3"


def _sleeping(seconds: int) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if command == f"sleep {seconds}":
            found.append(pid)
    return found


def test_stop_leaves_no_container_and_no_process(cli, nodes, workdir, image):
    container_cluster(cli, nodes)
    job = job_id_of(cli.ok("run", "-c", "c", "--image", image, "--executor", "distributed", "--workdir",
                        str(workdir), "--", "sh", "-c", "echo started; sleep 6127"))
    eventually(lambda: len(_sleeping(6127)) >= 2, message="sleep 6127 in both containers")
    assert len(_sleeping(6127)) == 2
    assert cli.job(job)["state"] == "running"
    # podman hands the container the rank's log itself, keeping no copy of its own
    assert "started" in (attempt_dir(nodes.nodes[0], job) / "output.log").read_text()
    kept = subprocess.run(["runuser", "-u", nodes.nodes[0].user, "--", "podman", "logs",
                           f"tsubmit-{job}-r0-a1"], cwd="/", capture_output=True, text=True)
    assert "started" not in kept.stdout and "passthrough" in kept.stderr, kept
    cli.ok("stop", job, "--grace", "3")
    assert podman(nodes, "ps", "--all", "--quiet", "--filter", f"label=tsubmit.job={job}") == ""
    assert _sleeping(6127) == []
    assert cli.job(job)["state"] == "stopped"


def test_pull_never_with_an_absent_image_names_node_and_image(cli, nodes, workdir, image):
    container_cluster(cli, nodes)
    run = cli("run", "-c", "c", "--image", "localhost/not-here:1", "--pull", "never",
              "--executor", "distributed", "--workdir", str(workdir), "--", "sleep", "6128")
    assert run.code == 3, run.output
    assert "node1: image localhost/not-here:1 is not on this node and --pull is never" in run.stderr
    assert _sleeping(6128) == []
    [record] = cli.ok("list", "-o", "json").json()
    assert not any((n.remote_root / record["id"]).exists() for n in nodes.nodes[:2])


def test_the_docker_command_line_for_a_gpu_node(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2], tsubmit_gpus=8,
                      tsubmit_container_run_args=["--runtime=nvidia"])
    dry = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", "--image", "nvcr.io/nvidia/pytorch:24.01",
                 "--container-arg=--shm-size=16g", "--workdir", str(workdir), "--",
                 "python", "train.py").json()
    [head, worker] = dry["ranks"]
    job = dry["extravars"]["tsubmit_job_id"]
    command = worker["command"]
    assert command.startswith(f"docker run --name tsubmit-{job}-r1-a1 --label tsubmit.job={job} "
                              "--label tsubmit.rank=1 --label tsubmit.attempt=1 --network host ")
    assert "--ipc host" not in command  # the job asked for --shm-size instead
    job_dir = f"<remote root>/{job}"
    assert f"--volume '{job_dir}:{job_dir}' --workdir '{job_dir}/workdir'" in command
    assert f"--env-file '<remote root>/{job}/rank-1/attempt-1/container.env'" in command
    # only the GPUs the rank leased, in docker's quoted device list (gpu_lease.sh.j2 sets $leased_gpus)
    assert ('--gpus "\\"device=$leased_gpus\\"" --pull never --runtime=nvidia --shm-size=16g '
            "nvcr.io/nvidia/pytorch:24.01 ") in command
    assert command.endswith("torchrun --nnodes=2 --node-rank=1 --nproc-per-node=8 --rdzv-backend=c10d "
                            f"--rdzv-endpoint='{nodes.nodes[0].address}:<port>' --rdzv-id={job} "
                            f"--rdzv-conf=is_host=0 --local-addr={nodes.nodes[1].address} "
                            f"--max-restarts=0 --tee=3 --log-dir='<remote root>/{job}/rank-1/attempt-1/"
                            "workers' --no-python python train.py")
    assert "-e " not in command and "JOB" not in command
    assert "container.env" in worker["environment"]
    assert head["command"].startswith(f"docker run --name tsubmit-{job}-r0-a1 ")


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--image", "bad image; rm -rf /"], "invalid image name", 2),
    (["--image", "ok:1", "--pull", "sometimes"], "--pull must be one of missing, always, never", 2),
    (["--executor", "docker"], "give --image IMAGE", 2),
])
def test_bad_container_input(cli, workdir, args, message, code):
    run = cli("run", *args, "--workdir", str(workdir), "--", "true")
    assert run.code == code, run.output
    assert message in run.stderr and "Traceback" not in run.output


def test_unknown_engine_and_missing_engine(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:1], tsubmit_container_engine="containerd")
    run = cli("run", "-c", "c", "--image", "x:1", "--workdir", str(workdir), "--", "true")
    assert run.code == 2 and "tsubmit_container_engine must be docker or podman" in run.stderr
    cli.write_cluster("c", nodes, nodes.nodes[:1], tsubmit_container_engine="docker",
                      tsubmit_python="/usr/bin/python3")
    run = cli("run", "-c", "c", "--image", "x:1", "--workdir", str(workdir), "--", "true")
    assert run.code == 3, run.output
    # This machine has docker's client but no engine: either way the node is named.
    assert ("node1: the container engine docker is not installed on this node" in run.stderr
            or "node1: cannot pull image x:1 with docker" in run.stderr), run.stderr
