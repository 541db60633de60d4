"""The launch contract: what a job's ranks run, what each node's probe is
asked, the host variables' defaults and the remote layout, computed once, here.

One module of the collection, used on both sides: the collection's actions
(render_launch, probe) call it for the launch and preflight roles,
so a plain ansible-playbook run, `tsubmit export` and AWX compute what
`tsubmit run` does; tsubmit loads it by path (tsubmit/model/collection.py) for its
dry run and for the paths that logs, status, stop, shell and fetch read. The
shell templates a rank runs (roles/launch/templates/) are rendered from
rank_variables(); an ops team may replace them with its own launch role.
Nothing here imports Ansible or Jinja.

The remote layout. Everything of a job lives under the host's remote root
(`tsubmit_remote_root`, default DEFAULT_ROOT; a leading ~ is the node user's
home, expanded on the node), with per-rank, per-attempt files so that nodes
sharing a filesystem never collide:

    <root>/.archives/<digest>.tar.gz      the node's cache of shipped archives
    <root>/.filesystem                    which filesystem the root is on (roles/sync_dirs)
    <root>/.setup/<key>/                  a setup's folder, shared by the jobs of one key
    <root>/<job>/workdir/                 the job's tree, unpacked once
    <root>/<job>/synced/, synced.dirs     folders synced (--sync-dir) before the tree was
                                          unpacked here; the unpack moves them in
    <root>/<job>/hostfile                 one line per node (TSUBMIT_HOSTFILE)
    <root>/<job>/tsubmit-lib/             rank_order.py as sitecustomize.py
    <root>/<job>/optuna/, optuna-lib/     an Optuna job's store and worker helpers
    <root>/optuna-studies/<study>.db      an Optuna study's SQLite file, which later jobs
                                          of the same study continue (study_file)
    <root>/<job>/rank-N/attempt-K/        one attempt of one rank:
        launch.sh, environment.sh         what runs, and its environment
        pid                               "PID STARTTICKS EPOCH", once started
        output.log                        the command's stdout and stderr
        setup.log                         the setup's output (run --setup)
        exit_code                         "CODE EPOCH", once it ended
        torchrun_error.json               the error a failed torchrun worker recorded
        stopped                           left by a stop
        container, container.env          a rank in a container

The node scripts that read it receive the paths as arguments; the roles that
run without tsubmit's help (stop, cleanup, status) take the root from the
filter tsubmit.cluster.remote_root, this module's default.

Paths here are POSIX strings, relative to the root unless a root is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

from . import executors

DEFAULT_ROOT = "~/.tsubmit/jobs"

ARCHIVES = ".archives"
SETUPS = ".setup"
WORKDIR = "workdir"
HOSTFILE = "hostfile"
RANK_LIB = "tsubmit-lib"
OPTUNA_DIR = "optuna"
OPTUNA_LIB = "optuna-lib"
OPTUNA_STUDIES = "optuna-studies"

# The files of one attempt of one rank.
LAUNCH = "launch.sh"
ENVIRONMENT = "environment.sh"
PID = "pid"
LOG = "output.log"
SETUP_LOG = "setup.log"
EXIT_CODE = "exit_code"
TORCHRUN_ERROR = "torchrun_error.json"
STOPPED = "stopped"
CONTAINER = "container"
CONTAINER_ENV = "container.env"

# The variable launch.sh exports to every process of a rank (stop and status
# find the rank's processes by it, also those that left its process group).
MARKER_VARIABLE = "TSUBMIT_RANK_MARKER"


def _under(root: str | None, *parts: str) -> str:
    path = "/".join(parts)
    return f"{root.rstrip('/')}/{path}" if root else path


def home_relative(root: str) -> str:
    """ROOT as a node script takes it: absolute, or relative to the node user's home
    (a leading ~ made .). The controller does not know that home: the script
    resolves it there, by starting in it (`cd`); ./ keeps CDPATH out."""
    return "." + root[1:] if root == "~" or root.startswith("~/") else root


def job_dir(job_id: str, root: str | None = None) -> str:
    return _under(root, job_id)


def workdir(job_id: str, root: str | None = None) -> str:
    return _under(root, job_id, WORKDIR)


def rank_dir(job_id: str, rank: int, root: str | None = None) -> str:
    return _under(root, job_id, f"rank-{rank}")


def attempt_dir(job_id: str, rank: int, attempt: int, root: str | None = None) -> str:
    return _under(root, job_id, f"rank-{rank}", f"attempt-{attempt}")


def attempt_file(job_id: str, rank: int, attempt: int, name: str, root: str | None = None) -> str:
    """One file of an attempt: LOG, PID, EXIT_CODE, ENVIRONMENT, ..."""
    return _under(root, attempt_dir(job_id, rank, attempt), name)


def archive(digest: str, root: str | None = None) -> str:
    return _under(root, ARCHIVES, f"{digest}.tar.gz")


def setup_dir(key: str, root: str | None = None) -> str:
    """The folder of a setup (run --setup), TSUBMIT_SETUP_DIR on the node."""
    return _under(root, SETUPS, key)


def marker(job_id: str, rank: int, attempt: int) -> str:
    """The value of MARKER_VARIABLE for one attempt of one rank."""
    return f"{job_id}.r{rank}.a{attempt}"


def optuna_lib(job_id: str, root: str | None = None) -> str:
    """The folder of an Optuna worker's helper modules, on its PYTHONPATH."""
    return _under(root, job_id, OPTUNA_LIB)


def rank_attempts(job_id: str, attempt: int, root: str) -> str:
    """Every rank's folder of one attempt as a printf pattern, %d the rank (a % of
    the root's doubled): how an Optuna job's store finds its workers' files."""
    return attempt_dir(job_id.replace("%", "%%"), "%d", attempt, root.replace("%", "%%"))


def optuna_dir(job_id: str, root: str | None = None) -> str:
    """The folder of an Optuna job's study store on its head."""
    return _under(root, job_id, OPTUNA_DIR)


_STUDY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def study_file(study: str, root: str | None = None, studies_dir: str | None = None) -> str:
    """The SQLite file of an Optuna study served from the head: in STUDIES_DIR
    (the optuna_store role's optuna_store_studies_dir), else <root>/optuna-studies;
    named by the study itself when it is a safe file name, else by a safe part
    and a hash that tells such names apart."""
    key = study
    if not _STUDY_KEY.match(study):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._-")[:60] or "study"
        key = f"{safe}-{hashlib.sha256(study.encode()).hexdigest()[:10]}"
    return f"{studies_dir.rstrip('/')}/{key}.db" if studies_dir else _under(root, OPTUNA_STUDIES, f"{key}.db")


# ------------------------------------------------------------- the host variables

# What a host may set, by what the contract calls it: key: (host variable, default).
HOST_DEFAULTS = {
    "remote_root": ("tsubmit_remote_root", DEFAULT_ROOT),
    "python": ("tsubmit_python", "python3"),
    "torchrun": ("tsubmit_torchrun", "torchrun"),
    "host_env": ("tsubmit_env", {}),
    "container_engine": ("tsubmit_container_engine", "docker"),
    "container_run_args": ("tsubmit_container_run_args", []),
    "lease_dir": ("tsubmit_gpu_lease_dir", "/dev/shm/tsubmit-gpu-leases"),
}

# The launch and preflight roles' own variables before the contract, and the
# host variables that replace them: a host that still sets one is refused,
# never silently left without its override.
RETIRED = {
    "launch_python": "tsubmit_python", "launch_torchrun": "tsubmit_torchrun",
    "launch_host_env": "tsubmit_env", "launch_container_engine": "tsubmit_container_engine",
    "launch_container_run_args": "tsubmit_container_run_args",
    "launch_gpu_lease_dir": "tsubmit_gpu_lease_dir",
    "preflight_remote_root": "tsubmit_remote_root", "preflight_python": "tsubmit_python",
    "preflight_torchrun": "tsubmit_torchrun", "preflight_nproc": "tsubmit_nproc",
    "preflight_container_engine": "tsubmit_container_engine",
}


def host_value(variables, key: str):
    """The host's value of HOST_DEFAULTS[KEY], or its default."""
    name, default = HOST_DEFAULTS[key]
    value = variables.get(name)
    return default if value is None or value == "" else value


def program_problem(value) -> str:
    """What is wrong with a python or torchrun as a host sets it ('' if nothing):
    the job runs it as it is written, and no shell expands a leading ~ there (a
    remote root's ~ is the node user's home: home_relative)."""
    return ("a leading ~ is not expanded where the job runs; set the full path"
            if str(value).startswith("~") else "")


def host_problems(variables, host) -> str:
    """What keeps a host from a launch ('' if nothing): a role variable the
    contract retired that it still sets (in VARIABLES, the task's), or a python
    or torchrun program_problem refuses (in HOST, its values)."""
    problems = [f"{name} is no longer read: set the host variable {RETIRED[name]} instead"
                for name in RETIRED if name in variables]
    for key in ("python", "torchrun"):
        name, value = HOST_DEFAULTS[key][0], host_value(host, key)
        if program_problem(value):
            problems.append(f"{name} is {value}: {program_problem(value)}")
    return "; ".join(problems)


def _int(value, default: int = 0) -> int:
    # As Jinja's int filter: a number, a numeric string, else the default.
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return default


def path_prefix(python: str, torchrun: str) -> str:
    """The folders of python and torchrun, for the front of the job's PATH."""
    return ":".join(dict.fromkeys(os.path.dirname(path) for path in (python, torchrun) if "/" in path))


# ------------------------------------------------------------- the probe request

def probe_request(job: dict, variables, dry: bool) -> dict:
    """What preflight's probe.py is asked on one host (its docstring lists the keys).

    JOB: the job's tsubmit_job_* values (executor, command, gpus, container,
    setup, archive_digest, id); VARIABLES: the host's."""
    traits = executors.traits(job["executor"])
    python, torchrun = host_value(variables, "python"), host_value(variables, "torchrun")
    address = variables["tsubmit_node_address"]
    head = _int(variables["tsubmit_rank"]) == 0
    container = job.get("container")
    return {
        "dry": dry,
        "remote_root": host_value(variables, "remote_root"),
        # Reported back, so every node's rendezvous address is known.
        "address": address,
        # The head picks the rendezvous port; where every node is a group of
        # its own (Optuna), every node picks one.
        "head_address": "127.0.0.1" if traits["group"] == "node" else (address if head else ""),
        # Processes per node: tsubmit_nproc (tsubmit sets it: --gpus, else the
        # host's tsubmit_gpus), else tsubmit_gpus; 0 counts GPUs (1 without any).
        "nproc": _int(variables.get("tsubmit_nproc", variables.get("tsubmit_gpus", 0))),
        # GPU ids: nvidia-smi's, else 0..tsubmit_gpus-1; the job's gpus leases
        # that many of them (None: all, 0: none).
        "gpus_declared": _int(variables.get("tsubmit_gpus", 0)),
        "gpus_wanted": job.get("gpus"),
        "archive_digest": job["archive_digest"],
        "job_id": job["id"],
        "path_prefix": path_prefix(python, torchrun),
        # In a container, the launcher and the command live in the image; with
        # a setup, they may be what it installs, after the probe.
        "commands": [] if container or job.get("setup") else
                    ([torchrun] if traits["torchrun"] else []) + [job["command"][0]],
        # torchrun: torch's node ranks follow tsubmit's (rank_order.py).
        "rank_order": traits["torchrun"],
        "container": container and {**container, "engine": host_value(variables, "container_engine")},
    }


# ------------------------------------------------------------- what each rank runs

# A world size not known before the probe (a dry run on nodes whose GPUs are counted at launch).
UNKNOWN_WORLD_SIZE = "<sum of gpus>"


def node_facts(probe: dict, variables) -> dict:
    """One node as rank_variables reads it: what its probe found and its host variables."""
    node = {key: probe[key]
            for key in ("address", "gpus", "remote_root", "port", "has_gpus", "gpu_ids", "lease")}
    node.update((key, host_value(variables, key)) for key in HOST_DEFAULTS if key != "remote_root")
    return node


def rank_variables(job: dict, nodes: list[dict], rank: int, optuna: dict | None = None) -> dict:
    """The launch_* variables the launch templates read for rank RANK.

    JOB: id, name, attempt, executor, command, env, max_restarts, container,
    setup, min_nodes, restart_cause (the job's tsubmit_job_* values). NODES,
    in rank order, node_facts(): address, gpus (processes on the node), remote_root, port, has_gpus,
    gpu_ids, lease (GPUs the rank leases), python, torchrun, host_env,
    container_engine, container_run_args, lease_dir. OPTUNA: the head's study
    store endpoint, or None.
    """
    node, head = nodes[rank], nodes[0]
    traits = executors.traits(job["executor"])
    own_group = traits["group"] == "node"  # each node a torch group of its own
    slots = [item["gpus"] for item in nodes]
    known = all(isinstance(count, int) for count in slots)
    root = node["remote_root"]
    setup = job.get("setup") or None
    return {
        "launch_executor": job["executor"],
        "launch_executor_traits": traits,
        "launch_command": job["command"],
        "launch_python": node["python"],
        "launch_torchrun": node["torchrun"],
        "launch_path_prefix": path_prefix(node["python"], node["torchrun"]),
        "launch_rank": rank,
        "launch_nnodes": len(nodes),
        # The fewest nodes the job may go on with (--min-nodes), at most this attempt's.
        "launch_min_nodes": min(_int(job.get("min_nodes")) or len(nodes), len(nodes)),
        "launch_nproc": node["gpus"],
        "launch_node_slots": slots,
        "launch_world_size": node["gpus"] if own_group else (
            sum(int(count) for count in slots) if known else UNKNOWN_WORLD_SIZE),
        "launch_node_address": node["address"],
        "launch_node_addresses": [item["address"] for item in nodes],
        "launch_master_addr": "127.0.0.1" if own_group else head["address"],
        "launch_master_port": node["port"] if own_group else head["port"],
        "launch_optuna": optuna if traits["study_store"] else None,
        "launch_job_dir": job_dir(job["id"], root),
        "launch_attempt_dir": attempt_dir(job["id"], rank, job["attempt"], root),
        "launch_workdir": workdir(job["id"], root),
        "launch_hostfile": _under(root, job["id"], HOSTFILE),
        "launch_optuna_helper_dir": optuna_lib(job["id"], root),
        "launch_job_id": job["id"],
        "launch_job_name": job["name"],
        "launch_attempt": job["attempt"],
        # Why the attempt before ended (data: the environment file quotes it).
        "launch_restart_cause": job.get("restart_cause") or "",
        "launch_max_restarts": job["max_restarts"],
        "launch_job_env": job["env"],
        "launch_host_env": node["host_env"],
        "launch_container": job.get("container") or None,
        "launch_container_engine": node["container_engine"],
        "launch_container_run_args": node["container_run_args"],
        "launch_container_name": f"tsubmit-{job['id']}-r{rank}-a{job['attempt']}",
        "launch_container_env_file": attempt_file(job["id"], rank, job["attempt"], CONTAINER_ENV, root),
        "launch_has_gpus": node["has_gpus"],
        "launch_setup": setup,
        "launch_setup_dir": setup_dir(setup["key"], root) if setup else "",
        "launch_gpu_ids": node["gpu_ids"],
        "launch_gpu_lease": node["lease"],
        "launch_gpu_lease_dir": node["lease_dir"],
    }


def masked(variables: dict) -> dict:
    """VARIABLES with the values of the job's and the host's environment hidden
    (they may be secrets; the host's may come from a vault): what `run --check`
    and `--dry-run` show."""
    return {**variables, **{name: {key: "<set>" for key in variables[name]}
                            for name in ("launch_job_env", "launch_host_env")}}


# The hook lists a host (tsubmit_*) and a job (tsubmit_job_*, extra-vars) add
# around the start of a rank, the host's first.
HOOKS = ("pre_launch_roles", "pre_launch_tasks", "post_launch_tasks")


def hooks(variables) -> dict[str, list]:
    """The hooks of one host: VARIABLES holds its tsubmit_* and the job's tsubmit_job_* lists."""
    def flat(value) -> list:
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return [item for element in value for item in flat(element)]
        return [value]

    return {kind: flat(variables.get(f"tsubmit_{kind}")) + flat(variables.get(f"tsubmit_job_{kind}"))
            for kind in HOOKS}


# An Optuna worker's helper modules (roles/optuna_store/files), shipped with the
# launch into optuna-lib/: tsubmit_optuna.py (load_study() from the job's
# environment), the gRPC client it imports, and sitecustomize.py, which teaches
# Optuna the grpc:// DATABASE_URI (TSUBMIT_OPTUNA_URI=off turns it off).
OPTUNA_HELPERS = ("tsubmit_optuna.py", "tsubmit_optuna_grpc.py", "sitecustomize.py")
# The prefix start_rank.sh moves such a shipped file into optuna-lib/ by.
OPTUNA_HELPER_PREFIX = "optuna-lib-"


def ship(job: dict, rank: int, probe: dict, scripts: dict[str, str], sources: dict[str, str],
         staged: bool) -> dict:
    """The arguments of the launch's one SSH round trip on one host: start_rank.sh's
    args, the folder of its bundle and the files it receives.

    JOB: id, attempt, setup, executor, meta (job.json), archive (its path on
    the controller), archive_digest. PROBE: what the host's probe found.
    SCRIPTS: the rank's launch.sh and environment.sh. SOURCES: the
    controller's paths of run_setup.sh, gpu_lease.py (with the tsubmit_procs.py it
    imports) and the OPTUNA_HELPERS.
    STAGED: pre-launch hooks run between the placing and the start."""
    root = probe["remote_root"]
    files = [{"name": "launch.sh", "content": scripts["launch.sh"], "mode": "0700"},
             # The rank's environment, also what `tsubmit shell` loads: it holds
             # the job's environment, secrets included.
             {"name": "environment.sh", "content": scripts["environment.sh"], "mode": "0600"},
             {"name": "job.json", "content": json.dumps(job["meta"], indent=4, sort_keys=True) + "\n",
              "mode": "0644"}]
    setup = job.get("setup")
    if setup:  # the command is data: a file, never a command line
        files += [{"name": "run_setup.sh", "src": sources["run_setup.sh"], "mode": "0700"},
                  {"name": "setup.sh", "content": setup["command"], "mode": "0600"},
                  {"name": "setup.vars", "mode": "0600",
                   "content": f"{setup['key']} {marker(job['id'], rank, job['attempt'])}"}]
    # The archive is cached on each node under its content hash: a node that
    # holds it, or the job's unpacked tree (a restart), receives nothing of it.
    if not (probe["archive_present"] or probe["tree_present"]):
        files.append({"name": "workdir.tar.gz", "src": job["archive"]})
    if _int(probe["lease"]) > 0:
        files += [{"name": name, "src": sources[name], "mode": "0644"}
                  for name in ("gpu_lease.py", "tsubmit_procs.py")]
    if executors.traits(job["executor"])["study_store"]:
        files += [{"name": OPTUNA_HELPER_PREFIX + name, "src": sources[name], "mode": "0644"}
                  for name in OPTUNA_HELPERS]
    return {"args": [root, job["id"], job["archive_digest"],
                     attempt_dir(job["id"], rank, job["attempt"], root), "stage" if staged else "start"],
            "tmpdir": job_dir(job["id"], root), "files": files}
