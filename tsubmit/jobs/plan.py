"""Planning a job: the request becomes a Job record on an ordered cluster, with
the extra-vars and steps its launch will run with; nothing touches a node.
"""

import time
from dataclasses import dataclass

from ..errors import UsageError
from ..local import archive as archives
from ..local import kept_inventories
from ..model import executors
from ..model.job import Job, Rank, friendly_name, new_job_id
from ..nodes import ansible_env, gpu_leases, hooks
from ..nodes.clusters import ClusterRef, Node, ResolvedCluster, host_variables, resolve
from .request import RunRequest

# submit.yml's roles.
SUBMIT_ROLES = ("preflight", "launch")


@dataclass
class Plan:
    """A job ready to launch: the record, its cluster, and per-host variables."""

    job: Job
    cluster: ResolvedCluster

    def host_vars(self) -> dict[str, dict]:
        return {
            node.name: {"tsubmit_nproc": self.job.gpus or node.gpus or 0}
            for node in self.cluster.nodes
        }

    def skipped_steps(self) -> list[str]:
        """Tags of submit.yml's steps this job has nothing to do in. A skipped
        tag is decided once, on the controller; a false `when` still costs
        every host a worker process."""
        used = hooks.kinds_used({node.name: node.vars for node in self.cluster.nodes},
                                hooks.job_extravars(self.job.extras))
        return unused_steps(self.job, used)

    def role_validation(self) -> dict:
        """Extra-vars that skip the roles' argument-spec validation when tsubmit
        has checked every variable they read: a validation is a task per host
        and role, about a fifth of a submit. The inventory's tsubmit_* variables
        are checked while resolving the cluster (clusters.resolve) and its
        hooks by hooks.check; the rest are tsubmit's own extra-vars. A role
        replaced on TSUBMIT_ANSIBLE_PATH keeps the validation."""
        replaced = any((folder / role).is_dir()
                       for folder in ansible_env.user_paths() for role in SUBMIT_ROLES)
        return {} if replaced else {"tsubmit_validate_roles": False}


def unused_steps(job: Job, hook_kinds: set[str]) -> list[str]:
    steps = [] if executors.get(job.executor).study_store else ["optuna"]
    if not hook_kinds & {"pre_launch_roles", "pre_launch_tasks"}:
        steps.append("pre_launch_hooks")
    if "post_launch_tasks" not in hook_kinds:
        steps.append("post_launch_hooks")
    return steps


def plan(request: RunRequest) -> Plan:
    cluster = resolve(request.cluster)
    fewest = request.recovery.get("min_nodes")
    if fewest is not None and fewest > len(cluster.nodes):
        names = ", ".join(node.name for node in cluster.nodes)
        raise UsageError(f"--min-nodes {fewest} is more than the job's {len(cluster.nodes)} node"
                         f"{'s' if len(cluster.nodes) > 1 else ''} ({names})")
    ansible_env.user_paths()  # a wrong TSUBMIT_ANSIBLE_PATH fails here, before anything is recorded
    job = Job(
        id=new_job_id(),
        name=request.name or friendly_name(),
        cluster=request.cluster.name,
        inventory={**request.cluster.as_dict(), "head_reason": cluster.head_reason},
        executor=request.executor,
        command=list(request.command),
        workdir=str(request.workdir.resolve()),
        env=dict(request.env),
        gpus=request.gpus,
        max_restarts=request.max_restarts,
        keep_going=request.keep_going,
        git_commit=archives.git_commit(request.workdir),
        extras={key: value for key, value in
                (("container", request.container), ("hooks", request.hooks), ("optuna", request.optuna),
                 ("setup", request.setup_step), ("notify", request.notify), ("recovery", request.recovery))
                if value},
        ranks=[Rank(node.rank, node.name, node.address, nproc=request.gpus or node.gpus)
               for node in cluster.nodes],
    )
    hooks.check({node.name: node.vars for node in cluster.nodes}, hooks.job_extravars(job.extras))
    if job.extras.get("optuna") and not job.extras["optuna"]["study"]:
        job.extras["optuna"]["study"] = job.name  # the generated name
    return Plan(job, cluster)


def replan(job: Job) -> Plan:
    """The plan of a recorded job's next attempt: its own hosts, ranks,
    addresses and processes per node, with the inventory's variables read
    again, so that a restart launches with the same extra-vars, skipped steps
    and rendering as `run`; a host gone from the inventory, or a hook file gone
    from the controller, is refused before anything changes."""
    inventory = job.inventory
    ref = ClusterRef(job.cluster, kept_inventories.next_attempt_sources(inventory),
                     inventory.get("group") or "all", inventory.get("limit"),
                     inventory.get("vault_password_file"))
    variables = host_variables(ref.sources, [rank.host for rank in job.ranks], ref.vault_password_file,
                               reveal=False)
    nodes = [Node(rank.host, rank.rank, rank.address, rank.nproc, variables[rank.host]) for rank in job.ranks]
    hooks.check({node.name: node.vars for node in nodes}, hooks.job_extravars(job.extras))
    return Plan(job, ResolvedCluster(ref, nodes, inventory.get("head_reason") or ""))


def extravars(job: Job, archive: archives.Archive | None) -> dict:
    return {
        "tsubmit_job_id": job.id,
        "tsubmit_job_name": job.name,
        "tsubmit_job_attempt": job.attempt,
        "tsubmit_job_restart_cause": job.restart_cause(),
        # What the roles run (`docker` runs distributed's template, in the container).
        "tsubmit_job_executor": executors.get(job.executor).runs,
        "tsubmit_job_command": job.command,
        "tsubmit_job_env": job.env,
        "tsubmit_job_max_restarts": job.max_restarts,
        # GPUs leased per node: None all of the node's, 0 none (docs/how-to/sharing-gpus.md).
        "tsubmit_job_gpus": job.gpus,
        "tsubmit_job_nodes": [rank.host for rank in job.ranks],
        "tsubmit_job_container": job.extras.get("container"),
        "tsubmit_job_optuna": job.extras.get("optuna"),
        "tsubmit_job_setup": job.extras.get("setup"),
        "tsubmit_job_min_nodes": job.recovery.get("min_nodes"),
        **hooks.job_extravars(job.extras),
        "tsubmit_job_archive": str(archive.path) if archive else "<archive>",
        "tsubmit_job_archive_digest": archive.digest if archive else "<digest>",
        "tsubmit_job_meta": {
            "id": job.id,
            "name": job.name,
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.created_at)),
            "git_commit": job.git_commit,
            "command": job.command,
            "executor": job.executor,
            # Who holds the GPUs, in the rank's lease (roles/gpu_lease).
            "submitted_by": gpu_leases.submitter(),
        },
    }
