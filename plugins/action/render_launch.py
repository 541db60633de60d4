"""Action of tsubmit.cluster.render_launch (documented in plugins/modules/render_launch.py).

Run once, on the controller, between the probe and the launch: computes every
rank's launch (plugin_utils/launch_contract.py) and renders its launch.sh and
environment.sh in this one process, each template compiled once
(plugin_utils/launch_render.py), and returns by host the ship task's
arguments, the hooks and the paths they see, and `run --check`'s view. The
launch role registers it (run_once: every host gets the result) and sends it
as data. A registered result, not a fact: ansible-runner keeps a fact cache
among its artifacts, and the scripts hold the job's environment.
"""

import json

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.tsubmit.cluster.plugins.plugin_utils import executors, launch_contract, launch_render

FAILED = "cannot compute the launch on the controller"
ARGUMENT_SPEC = {"hosts": {"type": "list", "elements": "str", "required": True}}
# The host's variables the contract reads, and the job's hooks.
HOST_VARIABLES = (*(name for name, _ in launch_contract.HOST_DEFAULTS.values()),
                  *(f"tsubmit{prefix}_{kind}" for kind in launch_contract.HOOKS for prefix in ("", "_job")))
JOB_KEYS = ("id", "name", "attempt", "executor", "command", "env", "max_restarts", "meta", "archive",
            "archive_digest")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # it only computes, here

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        hosts = args["hosts"]
        hostvars = task_vars["hostvars"]
        probes = task_vars["preflight_nodes"]
        job = {key: self._templar.template(task_vars[f"tsubmit_job_{key}"]) for key in JOB_KEYS}
        job["container"] = self._templar.template(task_vars.get("tsubmit_job_container"))
        job["setup"] = self._templar.template(task_vars.get("tsubmit_job_setup"))
        job["min_nodes"] = self._templar.template(task_vars.get("tsubmit_job_min_nodes"))
        job["restart_cause"] = self._templar.template(task_vars.get("tsubmit_job_restart_cause", ""))
        check = bool(task_vars.get("ansible_check_mode"))
        try:
            variables = [self._host_variables(task_vars, host) for host in hosts]
            nodes = [launch_contract.node_facts(probes[host], own)
                     for host, own in zip(hosts, variables, strict=True)]
            optuna = (hostvars[hosts[0]]["optuna_store_endpoint"]
                      if executors.traits(job["executor"])["study_store"] else None)
            renderer = launch_render.Renderer(self._templates())
            sources = self._sources()
            ranks = {}
            for rank, host in enumerate(hosts):
                values = launch_contract.rank_variables(job, nodes, rank, optuna)
                hooks = launch_contract.hooks(variables[rank])
                staged = bool(hooks["pre_launch_roles"] or hooks["pre_launch_tasks"])
                scripts = renderer.scripts(values)
                ship = launch_contract.ship(job, rank, probes[host], scripts, sources, staged)
                ranks[host] = {"ship": ship, "hooks": hooks,
                               # What the hooks see (the role's documented names).
                               "paths": {name: values[name] for name in
                                         ("launch_workdir", "launch_job_dir", "launch_attempt_dir",
                                          "launch_setup_dir")}}
                if check:
                    ranks[host]["check_view"] = self._check_view(renderer, values)
        except (KeyError, TypeError, ValueError) as error:
            raise AnsibleActionFail(f"{FAILED}: {error!r}") from None
        except Exception as error:  # a template error (jinja2's own exceptions)
            raise AnsibleActionFail(f"{FAILED}: {error}") from None
        # The scripts hold the job's environment, secrets included: callbacks
        # (runner's job_events, -v output) see a censored result; what is
        # registered is the whole. A failure above is reported in full (names only).
        result.update(changed=False, ranks=ranks, _ansible_no_log=True, msg=f"{len(ranks)} ranks")
        return result

    def _host_variables(self, task_vars, host) -> dict:
        """The variables of HOST the contract reads: the inventory's (hostvars,
        rendered by Ansible, vaulted values included), else a play's or the
        extra-vars' (this task's own, where the inventory of the host this
        runs for does not set them: the same for every host)."""
        own, here = task_vars["hostvars"][host], task_vars["hostvars"][task_vars["inventory_hostname"]]
        found = {}
        for name in HOST_VARIABLES:
            if name in own:
                found[name] = own[name]
            elif name in task_vars and name not in here:
                found[name] = self._templar.template(task_vars[name])
        return found

    @staticmethod
    def _check_view(renderer, variables) -> str:
        """What `run --check` shows of a rank instead of starting it: its
        command and environment, the environment's values masked."""
        shown = launch_contract.masked(variables)
        return json.dumps({"command": renderer.render("command.sh.j2", shown).strip(),
                               "environment": renderer.render("environment.sh.j2", shown).strip()})

    def _sources(self) -> dict[str, str]:
        """The controller's paths of the files a launch may ship, beside the launch role in
        every layout (the repository, the wheel, the collection)."""
        role_path = self._task._role._role_path
        sources = {"run_setup.sh": f"{role_path}/files/run_setup.sh",
                   "gpu_lease.py": f"{role_path}/../gpu_lease/files/gpu_lease.py",
                   "tsubmit_procs.py": f"{role_path}/../node_lib/files/tsubmit_procs.py"}
        sources.update((name, f"{role_path}/../optuna_store/files/{name}")
                       for name in launch_contract.OPTUNA_HELPERS)
        return sources

    def _templates(self) -> str:
        # The role's templates/ folder, found as the role's own template lookup finds it.
        found = self._find_needle("templates", launch_render.SCRIPTS["launch.sh"])
        return found.rsplit("/", 1)[0]
