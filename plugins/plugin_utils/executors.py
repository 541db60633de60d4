"""What each executor means on a node: the launch and preflight roles' side
of tsubmit/model/executors.py (which adds what only the controller needs, and
`docker`, tsubmit's name for distributed in a container).

What an executor runs is its template, roles/launch/templates/executors/
<name>.sh.j2. Everything else the roles and playbooks decide by the executor
reads this table, through the filter tsubmit.cluster.executor
(plugins/filter/executor.py); the controller-side renderer
(launch_render.py) reads it directly. Plain data, no imports: tsubmit loads
this file by path.
"""

# torchrun: the command runs under torchrun, which the node must have; it
#   starts the node's workers (and sets RANK, LOCAL_RANK), orders its
#   rendezvous by NODE_RANK (preflight's rank_order.py on its PYTHONPATH).
# group: "job", one torch group over every node (MASTER_ADDR the head,
#   WORLD_SIZE the sum of every node's processes); "node", each node a group
#   of its own (MASTER_ADDR 127.0.0.1, a port of its own, WORLD_SIZE its
#   processes).
# restarts: who reruns a failed command up to max_restarts: "torchrun" (the
#   whole worker group, torchrun's own), "script" (launch.sh, that node only)
#   or "none".
# study_store: the head runs the job's Optuna study store (submit.yml starts
#   it, stop.yml and cleanup.yml stop it) and every worker is told its address.
EXECUTORS = {
    "torchrun": {"torchrun": True, "group": "job", "restarts": "torchrun", "study_store": False},
    "distributed": {"torchrun": False, "group": "job", "restarts": "script", "study_store": False},
    "optuna": {"torchrun": False, "group": "node", "restarts": "none", "study_store": True},
}


def traits(name) -> dict:
    """The row of executor NAME; a ValueError naming the choices for another name."""
    try:
        return EXECUTORS[str(name)]
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}") from None
