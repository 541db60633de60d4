"""Action of tsubmit.cluster.render_launch (documented in plugins/modules/render_launch.py).

Run once, on the controller, between the probe and the launch: renders every
rank's launch.sh and environment.sh in this one process, each template
compiled once (plugin_utils/launch_render.py), and returns them inside each
host's arguments of the ship task as `ship` ({host: {args, tmpdir, files}},
what roles/launch/vars/main.yml's launch_ship_by_role computes), which the
launch role registers (run_once: every host gets the result) and sends as
data instead of rendering its templates and ~25 expressions in each host's
worker, which costs about 0.1 s of controller CPU per host in ansible-core 2.19. A registered result, not a
fact: ansible-runner keeps a fact cache among its artifacts, and the scripts
hold the job's environment.

A host whose variables name any launch_* role variable (an inventory that
overrides one) is left out: the role renders that host's scripts itself, from
its own variables, as a plain ansible-playbook run does.
"""

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.plugins.filter.core import flatten, to_nice_json

from ansible_collections.tsubmit.cluster.plugins.plugin_utils import executors, launch_render

# The role's switch for this step and the fact it sets, never a host's override.
OWN_VARIABLES = {"launch_render_on_controller", "launch_rendered"}
FAILED = "cannot render the launch scripts on the controller"
ARGUMENT_SPEC = {"hosts": {"type": "list", "elements": "str", "required": True}}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # it only renders, here

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        hosts = args["hosts"]
        hostvars = task_vars["hostvars"]
        probes = task_vars["preflight_nodes"]
        job = {key: self._templar.template(task_vars[f"tsubmit_job_{key}"])
               for key in ("id", "name", "attempt", "executor", "command", "env", "max_restarts")}
        job["container"] = self._templar.template(task_vars.get("tsubmit_job_container"))
        job["setup"] = self._templar.template(task_vars.get("tsubmit_job_setup"))
        try:
            nodes = [self._node(hostvars[host], probes[host]) for host in hosts]
            optuna = (hostvars[hosts[0]]["optuna_store_endpoint"]
                      if executors.traits(job["executor"])["study_store"] else None)
            renderer = launch_render.Renderer(self._templates())
            ship = {}
            for rank, host in enumerate(hosts):
                own = [name for name in hostvars[host]
                       if name.startswith("launch_") and name not in OWN_VARIABLES]
                if own or int(hostvars[host]["tsubmit_rank"]) != rank:
                    continue  # the role renders this host's scripts from its own variables
                scripts = renderer.scripts(launch_render.rank_variables(job, nodes, rank, optuna))
                ship[host] = self._ship(task_vars, hostvars[host], job, probes[host], rank, scripts)
        except (KeyError, TypeError, ValueError) as error:
            raise AnsibleActionFail(f"{FAILED}: {error!r}") from None
        except Exception as error:  # a template error (jinja2's own exceptions)
            raise AnsibleActionFail(f"{FAILED}: {error}") from None
        # The scripts hold the job's environment, secrets included: callbacks
        # (runner's job_events, -v output) see a censored result; what is
        # registered is the whole. A failure above is reported in full (names only).
        result.update(changed=False, ship=ship, _ansible_no_log=True,
                      msg=f"rendered {len(ship)} of {len(hosts)} ranks' scripts")
        return result

    def _node(self, variables, probe: dict) -> dict:
        node = {"address": probe["address"], "gpus": probe["gpus"], "remote_root": probe["remote_root"],
                "port": probe["port"], "has_gpus": probe["has_gpus"], "gpu_ids": probe["gpu_ids"],
                "lease": probe["lease"]}
        for key in launch_render.HOST_DEFAULTS:
            node[key] = launch_render.host_value(variables, key)
        return node

    def _ship(self, task_vars, variables, job, probe, rank, scripts) -> dict:
        """The ship task's arguments for one host, as roles/launch/vars/main.yml's
        launch_ship_by_role computes them (tests/e2e/test_launch_render.py
        compares what either way places on a node, byte for byte)."""
        role_path = self._task._role._role_path
        own = {key: self._templar.template(task_vars[f"tsubmit_job_{key}"])
               for key in ("meta", "archive", "archive_digest")}
        job_dir = f"{probe['remote_root']}/{job['id']}"
        attempt_dir = f"{job_dir}/rank-{rank}/attempt-{job['attempt']}"
        # launch_pre_launch_hooks: the inventory's and the job's (extra-vars) hook lists.
        hooks = [flatten([variables.get(f"tsubmit{prefix}_{kind}", [])])
                 for kind in ("pre_launch_roles", "pre_launch_tasks") for prefix in ("", "_job")]
        files = [{"name": "launch.sh", "content": scripts["launch.sh"], "mode": "0700"},
                 {"name": "environment.sh", "content": scripts["environment.sh"], "mode": "0600"},
                 {"name": "job.json", "content": to_nice_json(own["meta"]) + "\n", "mode": "0644"}]
        setup = job["setup"]
        if setup:
            files += [{"name": "run_setup.sh", "src": f"{role_path}/files/run_setup.sh", "mode": "0700"},
                      {"name": "setup.sh", "content": setup["command"], "mode": "0600"},
                      {"name": "setup.vars", "mode": "0600",
                       "content": f"{setup['key']} {job['id']}.r{rank}.a{job['attempt']}"}]
        if not (probe["archive_present"] or probe["tree_present"]):
            files.append({"name": "workdir.tar.gz", "src": own["archive"]})
        if int(probe["lease"]) > 0:
            files.append({"name": "gpu_lease.py", "src": f"{role_path}/../gpu_lease/files/gpu_lease.py",
                          "mode": "0644"})
        return {"args": [probe["remote_root"], job["id"], own["archive_digest"], attempt_dir,
                         "stage" if any(hooks) else "start"],
                "tmpdir": job_dir, "files": files}

    def _templates(self) -> str:
        # The role's templates/ folder, found as the role's own template lookup finds it.
        found = self._find_needle("templates", launch_render.SCRIPTS["launch.sh"])
        return found.rsplit("/", 1)[0]
