"""Action of tsubmit.cluster.probe (documented in plugins/modules/probe.py).

The one node probe, roles/preflight/files/probe.py, run through run_script's
one SSH execution, for the preflight role (`tsubmit run`) or, with `check`,
for the check role (`tsubmit cluster check`).

Preflight: computes what the node is asked (plugin_utils/launch_contract.py's
probe_request) from this host's variables, in Python. Per host, so a
playbook's own per-host variables (a play's `tsubmit_node_address: "{{ ... }}"`)
count as the inventory's do; no Jinja expression is compiled in the host's
worker. A host that still sets a role variable the contract retired is
refused, naming the host variable that replaced it, as is a python or
torchrun under ~ (launch_contract.host_problems).

Check: the probe gathers facts and fails nothing; a node whose python does
not run still answers (CHECK_LAUNCH).
"""

import json
import os

from ansible.errors import AnsibleActionFail

from ansible_collections.tsubmit.cluster.plugins.action.run_script import ActionModule as RunScript
from ansible_collections.tsubmit.cluster.plugins.plugin_utils import launch_contract

FAILED = "cannot compute the probe request"
# What the request reads: the job's (extra-vars or the play's) and the host's.
JOB_KEYS = ("executor", "command", "gpus", "container", "setup", "archive_digest", "id")
HOST_KEYS = ("tsubmit_node_address", "tsubmit_rank", "tsubmit_nproc", "tsubmit_gpus",
             *(name for name, _ in launch_contract.HOST_DEFAULTS.values()))
ARGUMENT_SPEC = {"check": {"type": "dict", "options": {
    key: {"type": "str", "required": True}
    for key in ("python", "torchrun", "remote_root", "container_engine", "module_python")}}}
# sh -c CHECK_LAUNCH probe.py PYTHON REQUEST: the probe's line; when PYTHON
# does not run, the node's python3 probes the rest, given PYTHON's error; on a
# node with no python at all, the answer cluster_check.py judges alone:
# PYTHON's error and the clock.
# PYTHON is run as it is written, as the job runs it: a leading ~ is not expanded.
CHECK_LAUNCH = r"""out=$("$1" -S -E "$0" "$2" 2>&1) && { printf '%s\n' "$out"; exit 0; }
why="$1 not found"
command -v -- "$1" >/dev/null 2>&1 && why="$1 does not run: $(printf '%s\n' "$out" | grep . | tail -n 1)"
python3 -S -E "$0" "$2" "$why" 2>/dev/null && exit 0
printf '{"python": {"found": false, "error": "%s"}, "time": %s}\n' \
    "$(printf '%s' "$why" | tr -d '\000-\037\042\134')" "$(date +%s)"
"""


class ActionModule(RunScript):

    def run(self, tmp=None, task_vars=None):
        _, arguments = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        asked = arguments["check"]
        if asked is not None:
            request = {"check": asked, "remote_root": asked["remote_root"],
                       "path_prefix": launch_contract.path_prefix(asked["python"], asked["torchrun"])}
            launch = {"executable": "/bin/sh", "executable_args": ["-c", CHECK_LAUNCH],
                      "args": [asked["python"], json.dumps(request)]}
        else:
            request, python = self._preflight_request(task_vars)
            launch = {
                # -S -E: the probe needs only the standard library, so the
                # interpreter skips site-packages (a venv's or conda env's .pth
                # files) and PYTHON* variables, which cost every node a few ms,
                # a large env far more.
                "executable": python,
                "executable_args": ["-S", "-E"],
                "args": [json.dumps(request)],
            }
        roles = os.path.dirname(self._task._role._role_path)
        files = [{"name": "gpu_lease.py", "src": f"{roles}/gpu_lease/files/gpu_lease.py", "mode": "0644"}]
        if request.get("rank_order"):
            files.append({"name": "rank_order.py", "src": f"{roles}/preflight/files/rank_order.py",
                          "mode": "0644"})
        self._task.args = {"script": f"{roles}/preflight/files/probe.py", "files": files, **launch}
        return super().run(tmp, task_vars)

    def _preflight_request(self, task_vars) -> tuple[dict, str]:
        try:
            job = {key: self._templar.template(task_vars.get(f"tsubmit_job_{key}")) for key in JOB_KEYS}
            host = {name: self._templar.template(task_vars[name]) for name in HOST_KEYS if name in task_vars}
            request = launch_contract.probe_request(job, host, bool(task_vars.get("ansible_check_mode")))
        except (KeyError, TypeError, ValueError) as error:
            raise AnsibleActionFail(f"{FAILED}: {error!r}") from None
        problem = launch_contract.host_problems(task_vars, host)
        if problem:
            raise AnsibleActionFail(problem)
        return request, launch_contract.host_value(host, "python")
