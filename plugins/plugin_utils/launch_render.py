"""The launch role's scripts rendered with jinja2 alone, as the role renders them.

roles/launch/templates/ (launch.sh.j2, environment.sh.j2, command.sh.j2 and
each executor's executors/<name>.sh.j2) are the role's interface: a plain
ansible-playbook run renders them per host with Ansible's template lookup
from the variables in roles/launch/vars/main.yml.
ansible-core 2.19 keeps no compiled template, so every forked worker compiles
the templates and each `launch_*` variable's expression again: 70-80 ms of
controller CPU per host. Here one process compiles each file once and renders
every rank from plain values (rank_variables mirrors vars/main.yml), with the
few filters and tests the templates use, behaving as Ansible's do.

Used by the collection's render_launch action (once per submit, between the
probe and the launch) and by tsubmit's --dry-run, so the three agree; a test
renders the same job through the role and through this module and compares
the scripts byte for byte (tests/e2e/test_launch_render.py).

Nothing here imports Ansible: tsubmit's dry run loads this folder by path
(tsubmit/collection.py).
"""

import os
import re
import shlex

import jinja2

from . import executors

# The files the launch step places beside each other (launch.sh sources environment.sh).
SCRIPTS = {"launch.sh": "launch.sh.j2", "environment.sh": "environment.sh.j2"}
# A world size not known before the probe (a dry run on nodes whose GPUs are counted at launch).
UNKNOWN_WORLD_SIZE = "<sum of gpus>"


def _quote(value) -> str:
    # ansible.builtin.quote: None is the empty string.
    return shlex.quote("" if value is None else str(value))


def _ternary(value, true_value, false_value, none_value=None):
    if value is None and none_value is not None:
        return none_value
    return true_value if bool(value) else false_value


def _match(value, pattern="", ignorecase=False, multiline=False) -> bool:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.match(pattern, str(value), flags) is not None


def _search(value, pattern="", ignorecase=False, multiline=False) -> bool:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.search(pattern, str(value), flags) is not None


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


class Renderer:
    """The templates of one folder, each compiled once, rendered as Ansible's
    template lookup renders them: trim_blocks, an included file's last newline
    dropped, the top file's trailing newlines kept."""

    def __init__(self, template_dir):
        self._loader = jinja2.FileSystemLoader(str(template_dir))
        self._environment = jinja2.Environment(loader=self._loader, trim_blocks=True,
                                               undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                               autoescape=False)
        self._environment.filters.update(quote=_quote, ternary=_ternary, basename=os.path.basename,
                                         dirname=os.path.dirname)
        self._environment.tests.update(match=_match, search=_search)
        self._newlines: dict[str, int] = {}

    def render(self, name: str, variables: dict) -> str:
        template = self._environment.get_template(name)  # compiled on first use, then cached
        if name not in self._newlines:
            source, _, _ = self._loader.get_source(self._environment, name)
            self._newlines[name] = _trailing_newlines(source)
        text = template.render(variables)
        return text + "\n" * max(self._newlines[name] - _trailing_newlines(text), 0)

    def scripts(self, variables: dict) -> dict[str, str]:
        """launch.sh and environment.sh of one rank."""
        return {name: self.render(template, variables) for name, template in SCRIPTS.items()}


# What the roles' defaults read from the host (roles/launch/defaults/main.yml,
# roles/preflight/defaults/main.yml): key: (host variable, default).
HOST_DEFAULTS = {
    "python": ("tsubmit_python", "python3"),
    "torchrun": ("tsubmit_torchrun", "torchrun"),
    "host_env": ("tsubmit_env", {}),
    "container_engine": ("tsubmit_container_engine", "docker"),
    "container_run_args": ("tsubmit_container_run_args", []),
    "lease_dir": ("tsubmit_gpu_lease_dir", "/dev/shm/tsubmit-gpu-leases"),
}


def host_value(variables, key: str):
    """The host's value of HOST_DEFAULTS[KEY], or the roles' default."""
    name, default = HOST_DEFAULTS[key]
    return variables.get(name, default)


def path_prefix(python: str, torchrun: str) -> str:
    """The folders of python and torchrun, for the front of the job's PATH."""
    return ":".join(dict.fromkeys(os.path.dirname(path) for path in (python, torchrun) if "/" in path))


def rank_variables(job: dict, nodes: list[dict], rank: int, optuna: dict | None = None) -> dict:
    """The launch_* variables of rank RANK, as roles/launch/vars/main.yml and
    defaults/main.yml define them.

    JOB: id, name, attempt, executor, command, env, max_restarts, container,
    setup (the job's tsubmit_job_* values). NODES, in rank order, what the probe
    found and the host's variables: address, gpus (processes on the node),
    remote_root, port, has_gpus, gpu_ids, lease (GPUs the rank leases), python,
    torchrun, host_env, container_engine, container_run_args, lease_dir. OPTUNA: the
    head's study store endpoint, or None.
    """
    node, head = nodes[rank], nodes[0]
    traits = executors.traits(job["executor"])
    own_group = traits["group"] == "node"  # each node a torch group of its own
    slots = [item["gpus"] for item in nodes]
    known = all(isinstance(count, int) for count in slots)
    job_dir = f"{node['remote_root']}/{job['id']}"
    attempt_dir = f"{job_dir}/rank-{rank}/attempt-{job['attempt']}"
    return {
        "launch_executor": job["executor"],
        "launch_executor_traits": traits,
        "launch_command": job["command"],
        "launch_python": node["python"],
        "launch_torchrun": node["torchrun"],
        "launch_path_prefix": path_prefix(node["python"], node["torchrun"]),
        "launch_rank": rank,
        "launch_nnodes": len(nodes),
        "launch_nproc": node["gpus"],
        "launch_node_slots": slots,
        "launch_world_size": node["gpus"] if own_group else (
            sum(int(count) for count in slots) if known else UNKNOWN_WORLD_SIZE),
        "launch_node_address": node["address"],
        "launch_node_addresses": [item["address"] for item in nodes],
        "launch_master_addr": "127.0.0.1" if own_group else head["address"],
        "launch_master_port": node["port"] if own_group else head["port"],
        "launch_optuna": optuna if traits["study_store"] else None,
        "launch_job_dir": job_dir,
        "launch_attempt_dir": attempt_dir,
        "launch_workdir": f"{job_dir}/workdir",
        "launch_hostfile": f"{job_dir}/hostfile",
        "launch_optuna_helper_dir": f"{job_dir}/optuna-lib",
        "launch_job_id": job["id"],
        "launch_job_name": job["name"],
        "launch_attempt": job["attempt"],
        "launch_max_restarts": job["max_restarts"],
        "launch_job_env": job["env"],
        "launch_host_env": node["host_env"],
        "launch_container": job["container"] or None,
        "launch_container_engine": node["container_engine"],
        "launch_container_run_args": node["container_run_args"],
        "launch_container_name": f"tsubmit-{job['id']}-r{rank}-a{job['attempt']}",
        "launch_container_env_file": f"{attempt_dir}/container.env",
        "launch_has_gpus": node["has_gpus"],
        "launch_setup": job.get("setup") or None,
        "launch_setup_dir": f"{node['remote_root']}/.setup/{job['setup']['key']}" if job.get("setup") else "",
        "launch_gpu_ids": node["gpu_ids"],
        "launch_gpu_lease": node["lease"],
        "launch_gpu_lease_dir": node["lease_dir"],
    }
