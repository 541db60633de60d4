# The work is done by the action plugin of the same name (plugins/action/),
# on the controller; this file holds its documentation.

DOCUMENTATION = r"""
module: render_launch
short_description: Render every rank's launch scripts of a tsubmit job on the controller, once
description:
  - Used by the C(tsubmit.cluster.launch) role with C(run_once), between the probe (the fact
    C(preflight_nodes)) and the launch, when C(launch_render_on_controller) is true (C(tsubmit run)
    sets it). Renders the role's C(launch.sh.j2) and C(environment.sh.j2) for every host in one
    process, each template compiled once, and returns them within each host's arguments of the ship
    task (C(launch_ship_by_role) in the role's vars, that is C(start_rank.sh)'s arguments, its tmpdir and
    the files it receives); the role registers the result (C(launch_rendered), on every host with
    C(run_once)) and sends it instead of rendering its templates and some 25 expressions in each
    host's worker.
  - The result is censored for callbacks (the scripts hold the job's environment), and it is not a
    fact, so no fact cache keeps it.
  - The host variables the role's defaults read (C(tsubmit_python), C(tsubmit_torchrun),
    C(tsubmit_env), C(tsubmit_container_engine), C(tsubmit_container_run_args)) are rendered by
    Ansible as for the role (inventory templates and vaulted values included); the job's own
    values are used as they are.
  - A host that sets any C(launch_*) role variable is left out of C(launch_rendered), and the role
    renders its scripts itself.
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
- name: Render every rank's launch scripts on the controller, once
  tsubmit.cluster.render_launch:
    hosts: "{{ tsubmit_job_nodes }}"
  run_once: true
  register: launch_rendered
"""

RETURN = r"""
ship:
  description: By host, C({args, tmpdir, files}) of the ship task, as the role computes them, the rendered
    scripts among the files; a host left to the role is absent.
  returned: always
  type: dict
"""
