"""The executors: how a job's command starts on each node, one row each.

Everything on the controller that depends on the executor reads this table:
`--executor` (its choices and help), the spec key and its JSON Schema
(jobspec.FIELDS), the request's validation (spec.validate_request), the
extra-vars the roles get (the node-side executor), the dry run's placeholders
(render), submit.yml's skipped steps (submit.unused_steps, also for
restart), what a job that ended releases and what status shows (lifecycle,
cli/jobs.py).

What an executor means on a node (torchrun or not, one torch group per job
or per node, who restarts a failed command, a study store on the head) is
the collection's side, plugins/plugin_utils/executors.py, which the roles
read too (node_traits() here). What an executor runs is its
template, roles/launch/templates/executors/<runs>.sh.j2.

`docker` is torch-submit's name for "distributed, inside a container": the
job records `docker` (what `list` and `status` show, what a restart keeps),
the nodes run distributed's template in the container `--image` names, and
without `--image` it is refused (exit 2).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Executor:
    name: str
    help: str  # one clause, for --executor's help and the spec key's description
    runs: str  # the node-side executor (tsubmit_job_executor): a row of node_traits()
    needs_image: bool = False

    @property
    def node(self) -> dict:
        """What it means on a node: {torchrun, group, restarts, study_store}."""
        return node_traits()[self.runs]

    @property
    def study_store(self) -> bool:
        """The head runs an Optuna study store: submit.yml's `optuna` step starts it,
        a job that ended releases it, status shows the study."""
        return self.node["study_store"]

    @property
    def node_local_groups(self) -> bool:
        """Each node is a torch group of its own, with a rendezvous port of its own."""
        return self.node["group"] == "node"


TABLE = (
    Executor("torchrun", "torchrun starts the node's processes (the default)", "torchrun"),
    Executor("distributed", "the command once per node, the torch variables set", "distributed"),
    Executor("docker", "distributed in a container, needs --image", "distributed", needs_image=True),
    Executor("optuna", "one Optuna search worker per node, one study", "optuna"),
)
BY_NAME = {executor.name: executor for executor in TABLE}
NAMES = tuple(BY_NAME)
DEFAULT = "torchrun"


def get(name: str) -> Executor:
    """The executor NAME (one of NAMES: spec.validate_request checks a request's)."""
    return BY_NAME[name]


def choices_help() -> str:
    """Every executor and what it does, for --executor's help and the spec's description."""
    return "; ".join(f"{executor.name}: {executor.help}" for executor in TABLE) + "."


def node_traits() -> dict:
    """plugins/plugin_utils/executors.py's table, loaded on first use (--help needs only names)."""
    from .collection import plugin_utils

    return plugin_utils("executors").EXECUTORS
