# The work is done by the action plugin of the same name (plugins/action/),
# on the controller; this file holds its documentation.

DOCUMENTATION = r"""
module: probe_requests
short_description: Compute every node's probe request of a tsubmit job on the controller, once
description:
  - Used by the C(tsubmit.cluster.preflight) role with C(run_once), before the probe, when
    C(preflight_requests_on_controller) is true (C(tsubmit run) sets it). Computes for every host
    in one process what the role's C(preflight_request) holds, as JSON, and returns it; the role
    registers the result (C(preflight_requests), on every host with C(run_once)) and sends it
    instead of rendering C(preflight_request) in each host's worker.
  - The host variables the role's defaults read (C(tsubmit_remote_root), C(tsubmit_python),
    C(tsubmit_torchrun), C(tsubmit_nproc), C(tsubmit_gpus), C(tsubmit_container_engine),
    C(tsubmit_node_address), C(tsubmit_rank)) are rendered by Ansible as for the role (inventory
    templates and vaulted values included); the job's own values are used as they are.
  - A host that sets any C(preflight_*) role variable is left out, and the role computes its
    request itself.
  - Runs nothing on a node.
options:
  hosts:
    description: The hosts to probe (C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
author: tsubmit
"""

EXAMPLES = r"""
- name: Compute every node's probe request on the controller, once
  tsubmit.cluster.probe_requests:
    hosts: "{{ ansible_play_hosts }}"
  run_once: true
  register: preflight_requests
"""

RETURN = r"""
requests:
  description: By host, the probe's request as JSON text; a host left to the role is absent.
  returned: always
  type: dict
"""
