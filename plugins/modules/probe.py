# The work is done by the action plugin of the same name (plugins/action/),
# on the controller and through one SSH execution; this file holds its documentation.

DOCUMENTATION = r"""
module: probe
short_description: Probe a node before a tsubmit job starts on it
description:
  - Used by the C(tsubmit.cluster.preflight) role. Computes on the controller what the node is asked
    (the collection's launch contract, C(plugins/plugin_utils/launch_contract.py)) from the host's
    variables and the job's, and runs the role's C(files/probe.py) on the node with the host's
    python (C(tsubmit_python)), in one SSH execution (as M(tsubmit.cluster.run_script)).
  - The probe resolves and creates the remote root, checks the job's launcher and command on the
    PATH the job will see, counts and leases GPUs, pulls a container image as asked and, on the head,
    picks a free rendezvous port; it prints one JSON line of what it found.
  - A host that sets a C(preflight_*) or C(launch_*) variable of earlier versions is refused, naming
    the host variable (C(tsubmit_*)) that replaced it.
options: {}
author: tsubmit
"""

EXAMPLES = r"""
- name: Probe the node
  tsubmit.cluster.probe:
  register: preflight_probe
"""

RETURN = r"""
stdout:
  description: What the probe found, as one JSON line (the preflight role's C(preflight_nodes) holds it).
  returned: success
  type: str
"""
