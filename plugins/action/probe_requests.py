"""Action of tsubmit.cluster.probe_requests (documented in plugins/modules/probe_requests.py).

Run once, on the controller, before the probe: computes every host's probe
request (what roles/preflight/vars/main.yml's preflight_request holds, as
JSON) in this one process, from the hosts' variables as Ansible renders them
(inventory templates and vaulted values included), and returns them as
`requests` ({host: JSON text}), which the preflight role registers (run_once:
every host gets the result) and sends instead of rendering preflight_request's
~20 expressions in each host's worker, each compiled anew there by
ansible-core 2.19.

A host whose variables name any preflight_* role variable (an inventory that
overrides one) is left out: the role computes that host's request itself, from
its own variables, as a plain ansible-playbook run does.
"""

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.plugins.filter.core import to_json
from jinja2.filters import do_int

from ansible_collections.tsubmit.cluster.plugins.plugin_utils import executors, launch_render

# The role's switch for this step and what the role registers and sets, never a host's override.
OWN_VARIABLES = {"preflight_requests_on_controller", "preflight_requests", "preflight_probe",
                 "preflight_nodes"}
FAILED = "cannot compute the probe requests on the controller"
ARGUMENT_SPEC = {"hosts": {"type": "list", "elements": "str", "required": True}}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # it only computes, here

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        hostvars = task_vars["hostvars"]
        job = {key: self._templar.template(task_vars.get(f"tsubmit_job_{key}"))
               for key in ("executor", "command", "gpus", "container", "setup", "archive_digest", "id")}
        requests = {}
        try:
            traits = executors.traits(job["executor"])
            for host in args["hosts"]:
                variables = hostvars[host]
                if any(name.startswith("preflight_") and name not in OWN_VARIABLES for name in variables):
                    continue  # the role computes this host's request from its own variables
                requests[host] = to_json(request(job, traits, variables, task_vars["ansible_check_mode"]))
        except (KeyError, TypeError, ValueError) as error:
            raise AnsibleActionFail(f"{FAILED}: {error!r}") from None
        result.update(changed=False, requests=requests, msg=f"{len(requests)} of {len(args['hosts'])} hosts")
        return result


def request(job: dict, traits: dict, variables, dry: bool) -> dict:
    """One host's preflight_request, as roles/preflight/vars/main.yml and
    defaults/main.yml define it (the same keys, in the same order)."""
    python = launch_render.host_value(variables, "python")
    torchrun = launch_render.host_value(variables, "torchrun")
    address = variables["tsubmit_node_address"]
    head = do_int(variables["tsubmit_rank"]) == 0
    container = job["container"]
    return {
        "dry": dry,
        "remote_root": variables.get("tsubmit_remote_root", "~/.tsubmit/jobs"),
        "address": address,
        "head_address": "127.0.0.1" if traits["group"] == "node" else (address if head else ""),
        "nproc": do_int(variables.get("tsubmit_nproc", variables.get("tsubmit_gpus", 0))),
        "gpus_declared": do_int(variables.get("tsubmit_gpus", 0)),
        "gpus_wanted": job["gpus"],
        "archive_digest": job["archive_digest"],
        "job_id": job["id"],
        "path_prefix": launch_render.path_prefix(python, torchrun),
        "commands": [] if container or job["setup"] else
                    ([torchrun] if traits["torchrun"] else []) + [job["command"][0]],
        "rank_order": traits["torchrun"],
        "container": container and {**container,
                                    "engine": launch_render.host_value(variables, "container_engine")},
    }
