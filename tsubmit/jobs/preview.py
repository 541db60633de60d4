"""Render a rank's command and environment on the controller, for --dry-run.

What a rank runs is the collection's launch contract
(plugins/plugin_utils/launch_contract.py) rendered by its renderer
(launch_render.py) from the launch role's own templates: what the
render_launch action computes for a real submit, so a dry run prints exactly
what a rank would run. Values only known at launch (the rendezvous port, GPUs
counted by nvidia-smi, the remote root) are shown as <placeholders>.
"""

import functools

from ..model import executors
from ..model.collection import launch_contract, plugin_utils
from ..model.job import Job
from ..nodes.clusters import Node, ResolvedCluster
from ..paths import ansible_dir
from .plan import Plan, extravars
from .views import public_extras

PORT = "<port>"
DETECTED = "<gpus>"
REMOTE_ROOT = "<remote root>"


@functools.cache
def _renderer():
    return plugin_utils("launch_render").Renderer(ansible_dir() / "roles" / "launch" / "templates")


def launch_variables(job: Job, cluster: ResolvedCluster, node: Node, nproc: int | None) -> dict:
    """The launch_* variables of NODE's rank, with placeholders for what the probe would find."""
    contract = launch_contract()
    executor = executors.get(job.executor)
    own_port = executor.node_local_groups  # each node a group of its own, with a port of its own
    probes = [{
        "address": n.address,
        # Processes: the GPUs leased on a node that declares some (1 with --gpus 0), as the probe says.
        "gpus": ((n.gpus if job.gpus is None else job.gpus) or 1) if n.gpus else (nproc or DETECTED),
        "remote_root": REMOTE_ROOT,
        "port": PORT if own_port or n.rank == 0 else None,
        # GPUs are counted at launch; a dry run takes a node that declares them at its word.
        "has_gpus": n.gpus is not None,
        # A node that declares tsubmit_gpus leases them (all, or --gpus of them).
        "gpu_ids": list(range(n.gpus or 0)),
        "lease": (n.gpus if job.gpus is None else job.gpus) if n.gpus else 0,
    } for n in cluster.nodes]
    nodes = [contract.node_facts(probe, n.vars) for probe, n in zip(probes, cluster.nodes, strict=True)]
    values = {"id": job.id, "name": job.name, "attempt": job.attempt, "executor": executor.runs,
              "command": job.command, "env": job.env, "max_restarts": job.max_restarts,
              "container": job.extras.get("container"), "setup": job.extras.get("setup"),
              "min_nodes": job.recovery.get("min_nodes"),
              "restart_cause": job.restart_cause()}
    return contract.rank_variables(values, nodes, node.rank, _optuna_endpoint(job, cluster))


def _optuna_endpoint(job: Job, cluster: ResolvedCluster) -> dict | None:
    settings = job.extras.get("optuna")
    if not executors.get(job.executor).study_store or not settings:
        return None
    return {"study": settings["study"], "storage_url": settings["storage"],
            "host": cluster.nodes[0].address, "port": "<store port>"}


def render(template: str, variables: dict) -> str:
    return _renderer().render(template, variables)


def describe(the_plan: Plan) -> dict:
    """What a run would do, without touching any node."""
    job, cluster = the_plan.job, the_plan.cluster
    host_vars = the_plan.host_vars()
    ranks = []
    masked = {key: "<set>" for key in job.env}  # job variables may be secrets
    for node in cluster.nodes:
        variables = {**launch_variables(job, cluster, node, job.gpus), "launch_job_env": masked}
        if variables["launch_optuna"]:
            storage = public_extras(job.extras)["optuna"]["storage"]
            variables["launch_optuna"] = {**variables["launch_optuna"], "storage_url": storage}
        ranks.append({
            "rank": node.rank,
            "host": node.name,
            "address": node.address,
            "command": render("command.sh.j2", variables).strip(),
            "environment": render("environment.sh.j2", variables).strip(),
        })
    secret_free = {**extravars(job, None), "tsubmit_job_env": masked,
                   "tsubmit_job_optuna": public_extras(job.extras).get("optuna")}
    return {
        "inventory": {node.name: {"tsubmit_rank": node.rank, "tsubmit_node_address": node.address,
                                  **host_vars[node.name]} for node in cluster.nodes},
        "inventory_sources": cluster.ref.sources,
        "head": {"host": cluster.nodes[0].name, "reason": cluster.head_reason},
        "extravars": secret_free,
        "ranks": ranks,
    }
