"""The filter tsubmit.cluster.remote_root: a host's remote root, or the default.

`tsubmit_remote_root | default(none) | tsubmit.cluster.remote_root` is the
folder under which a node keeps every job (plugins/plugin_utils/
launch_contract.py, the one home of its default), so no role or playbook
spells the default again.
"""

from ansible_collections.tsubmit.cluster.plugins.plugin_utils import launch_contract

DOCUMENTATION = r"""
name: remote_root
short_description: A host's tsubmit remote root, or its default
description:
  - The host variable C(tsubmit_remote_root) when it is set and not empty, else C(~/.tsubmit/jobs),
    the folder on a node under which every tsubmit job has its own directory (a leading C(~) is the
    node user's home, expanded on the node).
positional: _input
options:
  _input:
    description: The host's C(tsubmit_remote_root), or null.
    type: str
    required: true
  home_relative:
    description:
      - Give the root as a node script takes it, absolute or relative to the node user's home (a
        leading C(~) made C(.)); the script starts in that home (C(cd)) and resolves it there.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Show the node's remote root
  ansible.builtin.debug:
    msg: "{{ tsubmit_remote_root | default(none) | tsubmit.cluster.remote_root }}"
"""

RETURN = r"""
_value:
  description: The remote root.
  type: str
"""


def remote_root(value, home_relative=False) -> str:
    root = launch_contract.host_value({"tsubmit_remote_root": value}, "remote_root")
    return launch_contract.home_relative(root) if home_relative else root


class FilterModule:
    def filters(self):
        return {"remote_root": remote_root}
