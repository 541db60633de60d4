"""A rank's command and environment, rendered from the launch role's templates.

Quoting is checked by running the rendered shell, not by reading it: what a
shell hands the program must be exactly what the user typed.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tsubmit.jobs.logs import WORKER_PREFIX
from tsubmit.jobs.plan import Plan
from tsubmit.jobs.preview import DETECTED, PORT, describe, launch_variables, render
from tsubmit.model.job import Job, Rank
from tsubmit.nodes.clusters import ClusterRef, Node, ResolvedCluster

pytestmark = pytest.mark.usefixtures("no_injection")  # tests/conftest.py

TEMPLATES = Path(__file__).resolve().parents[2] / "roles" / "launch" / "templates"
DUMP_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"

HOSTILE_ARGS = [
    "it's",
    'say "hi"',
    "$(touch /tmp/tsubmit-render-pwned)",
    "`touch /tmp/tsubmit-render-pwned`",
    "${HOME}",
    "$HOME",
    "a;b|c&d>e<f",
    "*",
    "~",
    "!bang",
    "#hash",
    "back\\slash",
    "",
    "  spaced  ",
    "tab\there",
    "--flag=a b",
    "ünïcödé",
    "line1\nline2",
    "trailing newline\n",
]
HOSTILE_ARGV = ["python", "-c", 'print("a b; $HOME")', *HOSTILE_ARGS]
NEWLINE_FREE_ARGS = [arg for arg in HOSTILE_ARGS if "\n" not in arg]

HOSTILE_VALUES = {
    "V_SPACES": "a b  c",
    "V_DOLLAR": "$HOME ${PATH}",
    "V_SUBST": "$(touch /tmp/tsubmit-render-pwned)",
    "V_BACKTICK": "`touch /tmp/tsubmit-render-pwned`",
    "V_SQUOTE": "it's",
    "V_DQUOTE": 'say "hi"',
    "V_NEWLINES": "line1\nline2\n",
    "V_EMPTY": "",
    "V_BACKSLASH": "a\\nb\\",
    "V_META": "a;b|c&d>e<f *",
    "V_EQUALS": "k=v=w",
    "V_UNICODE": "ünïcödé",
}


def make_cluster(count: int = 3, gpus=None, **host_vars) -> ResolvedCluster:
    gpus_of = gpus if isinstance(gpus, list) else [gpus] * count
    nodes = [Node(f"node{i}", i, f"10.0.0.{i + 1}", gpus_of[i], dict(host_vars)) for i in range(count)]
    return ResolvedCluster(ClusterRef("c", ["inv.yml"]), nodes, "first host of group all")


def make_job(cluster: ResolvedCluster, executor: str = "torchrun", command=None, **fields) -> Job:
    return Job(
        id="abc123def0", name=fields.pop("name", "job-1"), cluster="c", inventory=cluster.ref.as_dict(),
        executor=executor, command=list(command or ["python", "train.py"]), workdir="/w",
        ranks=[Rank(n.rank, n.name, n.address, n.gpus) for n in cluster.nodes], **fields,
    )


def variables(job: Job, cluster: ResolvedCluster, rank: int = 0) -> dict:
    return launch_variables(job, cluster, cluster.nodes[rank], job.gpus)


def run_sh(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", script], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, check=True)


@pytest.fixture
def fake_torchrun(tmp_path) -> str:
    """Stands in for torchrun: prints the arguments the shell gave it."""
    path = tmp_path / "fake bin" / "torchrun"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{DUMP_ARGV}\n")
    path.chmod(0o755)
    return str(path)


# --- command.sh.j2 -----------------------------------------------------------------


def test_distributed_command_round_trips_through_shlex():
    cluster = make_cluster()
    job = make_job(cluster, "distributed", HOSTILE_ARGV)
    assert shlex.split(render("command.sh.j2", variables(job, cluster))) == HOSTILE_ARGV


def test_torchrun_command_round_trips_through_shlex():
    cluster = make_cluster()
    job = make_job(cluster, "torchrun", HOSTILE_ARGV)
    words = shlex.split(render("command.sh.j2", variables(job, cluster)))
    assert words[0] == "torchrun"
    assert words[words.index("--no-python") + 1:] == HOSTILE_ARGV


@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_rendered_command_gives_the_program_exactly_its_argv(executor, fake_torchrun):
    cluster = make_cluster(gpus=1, tsubmit_torchrun=fake_torchrun)
    job = make_job(cluster, executor, [sys.executable, "-c", DUMP_ARGV, *HOSTILE_ARGS])
    out = json.loads(run_sh(render("command.sh.j2", variables(job, cluster))).stdout)
    if executor == "torchrun":
        out = out[out.index("--no-python") + 1:]
        assert out[:2] == [sys.executable, "-c"]
        out = out[3:]  # torchrun was handed the whole command; the program's own args follow
    assert out == HOSTILE_ARGS


def test_torchrun_path_with_spaces_is_quoted():
    cluster = make_cluster(tsubmit_torchrun="/opt/my env/bin/torchrun")
    words = shlex.split(render("command.sh.j2", variables(make_job(cluster), cluster)))
    assert words[0] == "/opt/my env/bin/torchrun"


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_torchrun_flags(rank):
    cluster = make_cluster(gpus=4)
    job = make_job(cluster, max_restarts=2)
    words = shlex.split(render("command.sh.j2", variables(job, cluster, rank)))
    assert words == [
        "torchrun",
        "--nnodes=3",
        f"--node-rank={rank}",
        "--nproc-per-node=4",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=10.0.0.1:{PORT}",
        "--rdzv-id=abc123def0",
        f"--rdzv-conf=is_host={1 if rank == 0 else 0}",
        f"--local-addr=10.0.0.{rank + 1}",
        "--max-restarts=2",
        "--tee=3",
        f"--log-dir=<remote root>/abc123def0/rank-{rank}/attempt-1/workers",
        "--no-python",
        "python",
        "train.py",
    ]


@pytest.mark.parametrize("min_nodes, count, nnodes", [(2, 3, "--nnodes=2:3"), (2, 2, "--nnodes=2"),
                                                      (None, 3, "--nnodes=3"), (5, 3, "--nnodes=3")])
def test_a_job_that_may_go_on_with_fewer_nodes_is_elastic_under_torchrun(min_nodes, count, nnodes):
    """--min-nodes M: torchrun's --nnodes=M:N, N the attempt's nodes (fewer after a lost one)."""
    cluster = make_cluster(count, gpus=1)
    job = make_job(cluster, extras={"recovery": {"min_nodes": min_nodes}})
    words = shlex.split(render("command.sh.j2", variables(job, cluster, 1)))
    assert words[1:3] == [nnodes, "--node-rank=1"]


def test_job_gpus_override_the_nodes_and_unknown_gpus_are_placeholders():
    cluster = make_cluster(gpus=[4, None, 2])
    job = make_job(cluster)
    assert "--nproc-per-node=4" in render("command.sh.j2", variables(job, cluster, 0))
    assert f"--nproc-per-node={DETECTED}" in render("command.sh.j2", variables(job, cluster, 1))
    assert variables(job, cluster)["launch_world_size"] == "<sum of gpus>"
    job.gpus = 3
    assert "--nproc-per-node=3" in render("command.sh.j2", variables(job, cluster, 1))
    assert variables(job, cluster)["launch_world_size"] == 9


def test_distributed_command_has_no_torchrun_flags():
    cluster = make_cluster(gpus=2)
    job = make_job(cluster, "distributed", max_restarts=5)
    assert render("command.sh.j2", variables(job, cluster, 1)).strip() == "python train.py"


# --- environment.sh.j2 -------------------------------------------------------------


def rendered_environment(job: Job, cluster: ResolvedCluster, rank: int = 0) -> dict[str, str]:
    script = render("environment.sh.j2", variables(job, cluster, rank)) + "\nexec env -0\n"
    out = run_sh(script).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def test_python_output_is_unbuffered_unless_the_job_says_otherwise():
    cluster = make_cluster(gpus=2)
    assert rendered_environment(make_job(cluster), cluster)["PYTHONUNBUFFERED"] == "1"
    buffered = make_job(cluster, env={"PYTHONUNBUFFERED": ""})
    assert rendered_environment(buffered, cluster)["PYTHONUNBUFFERED"] == ""
    prefixed = rendered_environment(make_job(cluster), cluster)["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"]
    assert prefixed == WORKER_PREFIX.format("${rank}")
    assert "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE" not in rendered_environment(
        make_job(cluster, executor="distributed"), cluster)


def test_hostile_job_env_values_reach_the_environment_exactly():
    cluster = make_cluster(gpus=2)
    job = make_job(cluster, env=dict(HOSTILE_VALUES), name="my job; $(touch /tmp/tsubmit-render-pwned)")
    env = rendered_environment(job, cluster)
    assert {key: env.get(key) for key in HOSTILE_VALUES} == HOSTILE_VALUES
    assert env["TSUBMIT_JOB_NAME"] == job.name


def test_hostile_host_env_values_reach_the_environment_exactly():
    cluster = make_cluster(gpus=2, tsubmit_env={**HOSTILE_VALUES, "V_NUMBER": 8})
    env = rendered_environment(make_job(cluster), cluster)
    assert {key: env.get(key) for key in HOSTILE_VALUES} == HOSTILE_VALUES
    assert env["V_NUMBER"] == "8"


def test_job_env_wins_over_host_env():
    cluster = make_cluster(gpus=1, tsubmit_env={"SHARED": "host", "HOST_ONLY": "h"})
    env = rendered_environment(make_job(cluster, env={"SHARED": "job"}), cluster)
    assert (env["SHARED"], env["HOST_ONLY"]) == ("job", "h")


@pytest.mark.parametrize("rank", [0, 2])
def test_the_torch_environment_contract(rank):
    cluster = make_cluster(gpus=2)
    env = rendered_environment(make_job(cluster), cluster, rank)
    assert env["MASTER_ADDR"] == "10.0.0.1"
    assert env["MASTER_PORT"] == PORT
    assert env["WORLD_SIZE"] == "6"
    assert env["NODE_RANK"] == str(rank)
    assert env["NNODES"] == "3"
    assert env["NPROC_PER_NODE"] == env["LOCAL_WORLD_SIZE"] == "2"
    assert env["TSUBMIT_JOB_ID"] == "abc123def0"
    assert env["TSUBMIT_ATTEMPT"] == "1"
    assert env["TSUBMIT_NODE_IPS"] == "10.0.0.1,10.0.0.2,10.0.0.3"
    assert env["TSUBMIT_HOSTFILE"] == "<remote root>/abc123def0/hostfile"
    assert int(env["OMP_NUM_THREADS"]) == max(1, os.cpu_count() // 2)
    assert "RANK" not in env and "LOCAL_RANK" not in env  # torchrun sets those per worker


@pytest.mark.parametrize(("gpus", "sets_rank"), [(1, True), (2, False)])
def test_distributed_sets_rank_only_with_one_process_per_node(gpus, sets_rank):
    cluster = make_cluster(gpus=gpus)
    env = rendered_environment(make_job(cluster, "distributed"), cluster, 1)
    if sets_rank:
        assert (env["RANK"], env["LOCAL_RANK"]) == ("1", "0")
    else:
        assert "RANK" not in env and "LOCAL_RANK" not in env


def test_a_preset_omp_num_threads_is_kept():
    cluster = make_cluster(gpus=2)
    script = render("environment.sh.j2", variables(make_job(cluster), cluster)) + "\necho $OMP_NUM_THREADS"
    assert run_sh(script, OMP_NUM_THREADS="7").stdout.decode().strip() == "7"


def test_path_prefix_from_python_and_torchrun_dirs():
    cluster = make_cluster(gpus=1, tsubmit_python="/opt/my env/bin/python",
                           tsubmit_torchrun="/opt/it's/bin/torchrun")
    env = rendered_environment(make_job(cluster), cluster)
    assert env["PATH"] == f"/opt/my env/bin:/opt/it's/bin:{os.environ['PATH']}"


def test_no_path_prefix_for_bare_names():
    cluster = make_cluster(gpus=1, tsubmit_python="python3")
    assert "export PATH" not in render("environment.sh.j2", variables(make_job(cluster), cluster))


# --- launch.sh.j2, as the render_launch action renders it ---------------------------------


@pytest.mark.parametrize("args", [NEWLINE_FREE_ARGS, HOSTILE_ARGS], ids=["one-line-args", "multiline-args"])
@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_launch_script_runs_the_command_exactly(tmp_path, fake_torchrun, executor, args):
    # launch.sh indents the included command; that must not reach inside a quoted argument.
    attempt, work = tmp_path / "attempt", tmp_path / "workdir"
    attempt.mkdir()
    work.mkdir()
    cluster = make_cluster(gpus=1, tsubmit_torchrun=fake_torchrun)
    job = make_job(cluster, executor, [sys.executable, "-c", DUMP_ARGV, *args],
                   env={"V_NEWLINES": "a\nb"})
    values = {**variables(job, cluster), "launch_attempt_dir": str(attempt), "launch_workdir": str(work),
              "launch_gpu_lease_dir": str(tmp_path / "leases")}
    # The node declares a GPU: the rank leases it with the helper start_rank.sh puts beside launch.sh.
    roles = Path(__file__).parents[2] / "roles"
    shutil.copy(roles / "gpu_lease" / "files" / "gpu_lease.py", attempt)
    shutil.copy(roles / "node_lib" / "files" / "tsubmit_procs.py", attempt)
    script = attempt / "launch.sh"
    script.write_text(render("launch.sh.j2", values))
    (attempt / "environment.sh").write_text(render("environment.sh.j2", values))
    subprocess.run(["/bin/sh", str(script), "run"], env={"PATH": os.environ["PATH"]}, check=True,
                   timeout=30)
    assert (attempt / "exit_code").read_text().split()[0] == "0"
    out = json.loads((attempt / "output.log").read_text().strip().splitlines()[-1])
    if executor == "torchrun":
        out = out[out.index("--no-python") + 4:]
    assert out == args


# --- dry run -----------------------------------------------------------------------


def test_dry_run_describes_every_rank_and_hides_env_values_in_extravars():
    cluster = make_cluster(gpus=2)
    job = make_job(cluster, env={"SECRET": "hunter2"})
    description = describe(Plan(job, cluster))
    assert description["head"] == {"host": "node0", "reason": "first host of group all"}
    assert [r["rank"] for r in description["ranks"]] == [0, 1, 2]
    assert description["inventory"]["node1"] == {"tsubmit_rank": 1, "tsubmit_node_address": "10.0.0.2",
                                                 "tsubmit_nproc": 2}
    assert description["extravars"]["tsubmit_job_env"] == {"SECRET": "<set>"}
    assert "hunter2" not in json.dumps(description["extravars"])
    assert "--node-rank=2" in description["ranks"][2]["command"]


# --- one contract, one renderer -----------------------------------------------------


def test_the_dry_run_computes_and_renders_with_the_collections_contract():
    """tsubmit's dry run and remote layout are the collection's own modules, the ones
    the render_launch and probe actions use: no second copy on the controller."""
    from tsubmit.model import layout
    from tsubmit.model.collection import plugin_utils

    folder = TEMPLATES.parents[2] / "plugins" / "plugin_utils"
    assert Path(layout.__file__).resolve() == (folder / "launch_contract.py").resolve()
    assert Path(plugin_utils("launch_render").__file__).resolve() == (folder / "launch_render.py").resolve()
