"""The remote layout: where a job's files live on a node, named once.

Everything of a job lives under the host's remote root (`tsubmit_remote_root`,
default ~/.tsubmit/jobs; a leading ~ is the node user's home, expanded on the
node), with per-rank, per-attempt files so that nodes sharing a filesystem
never collide:

    <root>/.archives/<digest>.tar.gz      the node's cache of shipped archives
    <root>/.setup/<key>/                  a setup's folder, shared by the jobs of one key
    <root>/<job>/workdir/                 the job's tree, unpacked once
    <root>/<job>/hostfile                 one line per node (TSUBMIT_HOSTFILE)
    <root>/<job>/tsubmit-lib/             rank_order.py as sitecustomize.py
    <root>/<job>/optuna/, optuna-lib/     an Optuna job's store and helpers
    <root>/<job>/rank-N/attempt-K/        one attempt of one rank:
        launch.sh, environment.sh         what runs, and its environment
        pid                               "PID STARTTICKS EPOCH", once started
        output.log                        the command's stdout and stderr
        setup.log                         the setup's output (run --setup)
        exit_code                         "CODE EPOCH", once it ended
        torchrun_error.json               the error a failed torchrun worker recorded
        stopped                           left by a stop
        container, container.env          a rank in a container

Every controller-side path of that tree comes from here (logs, status, stop,
shell, fetch); the node scripts that read it receive the paths as arguments.
The roles that write it (launch, preflight) and the roles an exported project
runs without tsubmit (stop, cleanup) compose the same paths in one variable
each (roles/*/vars, roles/*/defaults), and tests/unit/test_structure.py
renders those variables and checks they equal what this module says.

Paths here are POSIX strings, relative to the root unless a root is given.
"""

from __future__ import annotations

DEFAULT_ROOT = "~/.tsubmit/jobs"

ARCHIVES = ".archives"
SETUPS = ".setup"
WORKDIR = "workdir"
HOSTFILE = "hostfile"
RANK_LIB = "tsubmit-lib"
OPTUNA_DIR = "optuna"
OPTUNA_LIB = "optuna-lib"

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
