"""The filter tsubmit.cluster.executor: what an executor means on a node.

`tsubmit_job_executor | tsubmit.cluster.executor` is that executor's row of
plugins/plugin_utils/executors.py ({torchrun, group, restarts, study_store}),
so the roles and playbooks decide by what an executor does, never by its name.
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.tsubmit.cluster.plugins.plugin_utils import executors

DOCUMENTATION = r"""
name: executor
short_description: What a tsubmit executor means on a node
description:
  - The row of the executor's table (plugins/plugin_utils/executors.py) as a dict with
    C(torchrun) (the command runs under torchrun), C(group) (C(job) or C(node)),
    C(restarts) (C(torchrun), C(script) or C(none)) and C(study_store) (the head runs an
    Optuna study store).
positional: _input
options:
  _input:
    description: The executor, C(tsubmit_job_executor).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Start the study store
  ansible.builtin.debug:
    msg: the head runs a study store
  when: (tsubmit_job_executor | tsubmit.cluster.executor).study_store
"""

RETURN = r"""
_value:
  description: The executor's traits.
  type: dict
"""


def executor(name) -> dict:
    try:
        return dict(executors.traits(name))
    except ValueError as error:
        raise AnsibleFilterError(str(error)) from None


class FilterModule:
    def filters(self):
        return {"executor": executor}
