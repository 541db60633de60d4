# The work is done by the action plugin of the same name (plugins/action/),
# on the controller; this file holds its documentation.

DOCUMENTATION = r"""
module: render_launch
short_description: Render every rank's launch scripts of a tsubmit job on the controller, once
description:
  - Used by the C(tsubmit.cluster.launch) role with C(run_once), between the probe (the fact
    C(preflight_nodes)) and the launch. Computes every rank's launch from the collection's launch
    contract (C(plugins/plugin_utils/launch_contract.py)) and renders the role's C(launch.sh.j2) and
    C(environment.sh.j2) for every host in one process, each template compiled once. Returns by host
    the ship task's arguments (C(start_rank.sh)'s arguments, its tmpdir and the files it receives),
    the hooks, the paths the hooks see and, in check mode, the rank's command and environment with
    the environment's values masked; the role registers it (C(launch_rendered), on every host with
    C(run_once)) and sends it as data.
  - The result is censored for callbacks (the scripts hold the job's environment), and it is not a
    fact, so no fact cache keeps it.
  - The host variables (C(tsubmit_python), C(tsubmit_torchrun), C(tsubmit_env),
    C(tsubmit_container_engine), C(tsubmit_container_run_args), C(tsubmit_gpu_lease_dir), the hook
    lists) are the inventory's, rendered by Ansible (inventory templates and vaulted values
    included), else the play's or the extra-vars'; the job's own values are used as they are.
  - Runs nothing on a node.
options:
  hosts:
    description: The job's hosts in rank order (C(tsubmit_job_nodes)).
    type: list
    elements: str
    required: true
author: tsubmit
"""

EXAMPLES = r"""
- name: Compute every rank's launch on the controller, once
  tsubmit.cluster.render_launch:
    hosts: "{{ tsubmit_job_nodes }}"
  run_once: true
  register: launch_rendered
"""

RETURN = r"""
ranks:
  description: By host, C({ship, hooks, paths}) and in check mode C(check_view); C(ship) is
    C({args, tmpdir, files}) of the ship task, the rendered scripts among the files.
  returned: always
  type: dict
"""
