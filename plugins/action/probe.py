"""Action of tsubmit.cluster.probe (documented in plugins/modules/probe.py).

The preflight role's probe of one node: computes what the node is asked
(plugin_utils/launch_contract.py's probe_request) from this host's variables,
in Python, and runs the role's files/probe.py there through run_script's one
SSH execution. Per host, so a playbook's own per-host variables (a play's
`tsubmit_node_address: "{{ ... }}"`) count as the inventory's do; no Jinja
expression is compiled in the host's worker. A host that still sets a role
variable the contract retired is refused, naming the host variable that
replaced it.
"""

import json

from ansible.errors import AnsibleActionFail

from ansible_collections.tsubmit.cluster.plugins.action.run_script import ActionModule as RunScript
from ansible_collections.tsubmit.cluster.plugins.plugin_utils import launch_contract

FAILED = "cannot compute the probe request"
# What the request reads: the job's (extra-vars or the play's) and the host's.
JOB_KEYS = ("executor", "command", "gpus", "container", "setup", "archive_digest", "id")
HOST_KEYS = ("tsubmit_node_address", "tsubmit_rank", "tsubmit_nproc", "tsubmit_gpus",
             *(name for name, _ in launch_contract.HOST_DEFAULTS.values()))


class ActionModule(RunScript):

    def run(self, tmp=None, task_vars=None):
        problem = launch_contract.retired(task_vars)
        if problem:
            raise AnsibleActionFail(problem)
        try:
            job = {key: self._templar.template(task_vars.get(f"tsubmit_job_{key}")) for key in JOB_KEYS}
            host = {name: self._templar.template(task_vars[name]) for name in HOST_KEYS if name in task_vars}
            request = launch_contract.probe_request(job, host, bool(task_vars.get("ansible_check_mode")))
        except (KeyError, TypeError, ValueError) as error:
            raise AnsibleActionFail(f"{FAILED}: {error!r}") from None
        files = self._task._role._role_path + "/files"
        self._task.args = {
            "script": "probe.py",
            # -S -E: the probe needs only the standard library, so the
            # interpreter skips site-packages (a venv's or conda env's .pth
            # files) and PYTHON* variables, which cost every node a few ms,
            # a large env far more.
            "executable": launch_contract.host_value(host, "python"),
            "executable_args": ["-S", "-E"],
            "args": [json.dumps(request)],
            "files": [{"name": "rank_order.py", "src": f"{files}/rank_order.py", "mode": "0644"},
                      # The node's GPU ids (roles/gpu_lease: one home for how a node's GPUs are found).
                      {"name": "gpu_lease.py", "src": f"{files}/../../gpu_lease/files/gpu_lease.py",
                       "mode": "0644"}],
        }
        return super().run(tmp, task_vars)
