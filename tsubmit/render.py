"""Render a rank's command and environment on the controller, for --dry-run.

The launch role's own templates are rendered here with the same variable
names the role defines (roles/launch/vars/main.yml), so a dry run prints
exactly what a rank would run. Values only known at launch (the rendezvous
port, GPUs counted by nvidia-smi, the remote root) are shown as <placeholders>.
"""

import os
import re
import shlex

from .clusters import Node, ResolvedCluster
from .job import Job
from .paths import ansible_dir

PORT = "<port>"
DETECTED = "<gpus>"


def launch_variables(job: Job, cluster: ResolvedCluster, node: Node, nproc: int | None) -> dict:
    slots = [nproc or n.gpus or DETECTED for n in cluster.nodes]
    known = [s for s in slots if isinstance(s, int)]
    optuna = job.executor == "optuna"  # each node is a group of its own
    job_dir = f"<remote root>/{job.id}"
    return {
        "launch_executor": job.executor,
        "launch_command": job.command,
        "launch_torchrun": node.vars.get("tsubmit_torchrun", "torchrun"),
        "launch_path_prefix": ":".join(
            dict.fromkeys(
                path.rsplit("/", 1)[0]
                for path in (node.vars.get("tsubmit_python", ""), node.vars.get("tsubmit_torchrun", ""))
                if "/" in path
            )
        ),
        "launch_rank": node.rank,
        "launch_nnodes": len(cluster.nodes),
        "launch_nproc": slots[node.rank],
        "launch_node_slots": slots,
        "launch_world_size": slots[node.rank] if optuna else (
            sum(known) if len(known) == len(slots) else "<sum of gpus>"),
        "launch_node_address": node.address,
        "launch_node_addresses": [n.address for n in cluster.nodes],
        "launch_master_addr": "127.0.0.1" if optuna else cluster.nodes[0].address,
        "launch_master_port": PORT,
        "launch_job_id": job.id,
        "launch_job_name": job.name,
        "launch_attempt": job.attempt,
        "launch_max_restarts": job.max_restarts,
        "launch_hostfile": f"{job_dir}/hostfile",
        "launch_host_env": node.vars.get("tsubmit_env") or {},
        "launch_job_env": job.env,
        "launch_job_dir": job_dir,
        "launch_workdir": f"{job_dir}/workdir",
        "launch_container": job.extras.get("container"),
        "launch_container_engine": node.vars.get("tsubmit_container_engine", "docker"),
        "launch_container_run_args": node.vars.get("tsubmit_container_run_args") or [],
        "launch_container_name": f"tsubmit-{job.id}-r{node.rank}-a{job.attempt}",
        "launch_container_env_file": f"{job_dir}/rank-{node.rank}/attempt-{job.attempt}/container.env",
        # GPUs are counted at launch; a dry run takes a node that declares them at its word.
        "launch_has_gpus": node.gpus is not None,
        "launch_optuna": _optuna_endpoint(job, cluster),
        "launch_optuna_helper_dir": f"{job_dir}/optuna-lib",
    }


def _optuna_endpoint(job: Job, cluster: ResolvedCluster) -> dict | None:
    settings = job.extras.get("optuna")
    if job.executor != "optuna" or not settings:
        return None
    return {"study": settings["study"], "storage_url": settings["storage"],
            "host": cluster.nodes[0].address, "port": "<store port>"}


def render(template: str, variables: dict) -> str:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ansible_dir() / "roles" / "launch" / "templates"),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["quote"] = lambda value: shlex.quote(str(value))
    environment.filters["basename"] = lambda value: os.path.basename(str(value))
    environment.tests["match"] = lambda value, pattern: re.match(pattern, str(value)) is not None
    return environment.get_template(template).render(variables)
