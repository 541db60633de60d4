"""The dashboard of an Optuna job's study: started on the head
(playbooks/optuna_dashboard.yml) and forwarded here over ssh.
"""

from __future__ import annotations

from ..nodes.places import places
from ..nodes.ports import free_local_port
from ..nodes.ssh_session import Session, forward
from .study import run_on_head, task_json

DASHBOARD_TASK = "Make sure a dashboard serves the job's Optuna study"


def open_dashboard(job, *, port: int = 0, verbose: int = 0) -> dict:
    """Make sure a dashboard serves the study on the head's 127.0.0.1: {"port", "started"}."""
    run, head = run_on_head(job, "optuna_dashboard", {"optuna_store_dashboard_state": "started",
                                                    "optuna_store_dashboard_port": port}, verbose=verbose)
    return task_json(run, head, DASHBOARD_TASK)


def close_dashboard(job, *, verbose: int = 0) -> None:
    """Stop a dashboard open_dashboard started (the job's own stays until the job ends)."""
    run_on_head(job, "optuna_dashboard", {"optuna_store_dashboard_state": "stopped"}, verbose=verbose)


def forward_dashboard(job, remote_port: int, local_port: int | None = None) -> tuple[Session | None, str]:
    """Start forwarding the head's dashboard port; (the forward's ssh session or None,
    the local URL). A head on a local connection needs no forwarding."""
    [place] = places(job, job.ranks[:1])
    if place.conn.local:
        return None, f"http://127.0.0.1:{remote_port}/"
    local_port = local_port or free_local_port()
    session = forward(place.conn, place.where, local_port, remote_port, option="--port")
    return session, f"http://127.0.0.1:{local_port}/"
