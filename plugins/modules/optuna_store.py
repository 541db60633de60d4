# The work is done by the action plugin of the same name (plugins/action/),
# on the controller and through one SSH execution; this file holds its documentation.

DOCUMENTATION = r"""
module: optuna_store
short_description: Act on a tsubmit Optuna job's study store on its head
description:
  - Used by the C(tsubmit.cluster.optuna_store) role. Computes on the controller the store's paths
    from the collection's launch contract (C(plugins/plugin_utils/launch_contract.py)) - the job's
    folder, the store's, every rank's attempt folder, the study's SQLite file - and runs the role's
    C(files/optuna_store.py) with the node's python (C(optuna_store_python)), in one SSH execution
    (as M(tsubmit.cluster.run_script)). It prints at most one JSON line.
  - The store runs as a rank does - detached, its pid with its start time, a marker in its
    environment, stopped by the stop role's C(stop.sh) - and is started again when it dies.
options:
  action:
    description: What to do - start, stop, release, summary, snapshot, dashboard or check.
    type: str
    required: true
    choices: [start, stop, release, summary, snapshot, dashboard, check]
  options:
    description: The action's own settings (study, direction, ports, ...), besides the computed paths.
    type: dict
    default: {}
  check_output:
    description: What the task returns as its stdout in check mode, where nothing runs.
    type: str
author: tsubmit
"""

EXAMPLES = r"""
- name: Summarize the job's Optuna study
  tsubmit.cluster.optuna_store:
    action: summary
  register: optuna_store_summary
"""

RETURN = r"""
stdout:
  description: The action's one JSON line (start - the endpoint; summary - trials and the best one).
  returned: success
  type: str
"""
