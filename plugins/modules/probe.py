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
    the host variable (C(tsubmit_*)) that replaced it; so is a C(tsubmit_python) or C(tsubmit_torchrun)
    that starts with C(~), which no shell expands where the job runs it.
  - With O(check) (the C(tsubmit.cluster.check) role), the same script only gathers what
    C(tsubmit cluster check) judges and fails nothing - the python and its version, torchrun and its
    torch version, the GPUs, the free space in the remote root (created when missing), the container
    engine, the interpreter of Ansible's modules, the job's PATH, the clock. A node whose python does not
    run is probed by its C(python3), that python's error reported; a node with no Python at all
    answers with that error and its clock alone.
options:
  check:
    description:
      - Gather the facts of C(tsubmit cluster check) instead of probing for a job.
    type: dict
    suboptions:
      python:
        description: The node's python (the host's C(tsubmit_python)).
        type: str
        required: true
      torchrun:
        description: The node's torchrun (C(tsubmit_torchrun)).
        type: str
        required: true
      remote_root:
        description: The remote root (C(tsubmit_remote_root)).
        type: str
        required: true
      container_engine:
        description: The container engine to look for; empty for none.
        type: str
        required: true
      module_python:
        description: C(ansible_python_interpreter); empty for the one discovery picks.
        type: str
        required: true
author: tsubmit
"""

EXAMPLES = r"""
- name: Probe the node
  tsubmit.cluster.probe:
  register: preflight_probe

- name: Probe the node for cluster check
  tsubmit.cluster.probe:
    check:
      python: python3
      torchrun: torchrun
      remote_root: /data/jobs
      container_engine: ""
      module_python: ""
  register: check_probe
"""

RETURN = r"""
stdout:
  description: What the probe found, as one JSON line (the preflight role's C(preflight_nodes) holds it).
  returned: success
  type: str
"""
