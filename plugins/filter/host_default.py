"""The filter tsubmit.cluster.host_default: a host variable's value, or its default.

`tsubmit_python | default(none) | tsubmit.cluster.host_default('python')` is
the node's python (plugins/plugin_utils/launch_contract.py's HOST_DEFAULTS,
the one home of every host variable's default), so no role spells a default
again; the remote root has a filter of its own, tsubmit.cluster.remote_root.
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.tsubmit.cluster.plugins.plugin_utils import launch_contract

DOCUMENTATION = r"""
name: host_default
short_description: A tsubmit host variable's value, or its default
description:
  - The host variable's value when it is set and not empty, else the default tsubmit gives it - for
    C(python) (C(tsubmit_python)) C(python3), for C(torchrun) (C(tsubmit_torchrun)) C(torchrun), and so
    on for every host variable of the launch contract.
positional: _input, key
options:
  _input:
    description: The host variable's value, or null.
    type: raw
    required: true
  key:
    description: Which host variable - python, torchrun, remote_root, host_env, container_engine,
      container_run_args or lease_dir.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Show the node's python
  ansible.builtin.debug:
    msg: "{{ tsubmit_python | default(none) | tsubmit.cluster.host_default('python') }}"
"""

RETURN = r"""
_value:
  description: The value, or its default.
  type: raw
"""


def host_default(value, key: str):
    if key not in launch_contract.HOST_DEFAULTS:
        raise AnsibleFilterError(f"host_default: no host variable {key!r} "
                                 f"(one of {', '.join(launch_contract.HOST_DEFAULTS)})")
    return launch_contract.host_value({launch_contract.HOST_DEFAULTS[key][0]: value}, key)


class FilterModule:
    def filters(self):
        return {"host_default": host_default}
