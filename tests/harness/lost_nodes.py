"""A job on nodes and spares, for the lost-node tests: each rank reports what it was
given (report_and_sleep.py) and sleeps; the watcher notices a node silent past a
short --node-timeout."""

import json

import yaml

from .jobs import log_of, start
from .waiting import eventually

# Short, so that a test waits for a condition of seconds; the default is 2m.
NODE_TIMEOUT = "2s"


def report(node, job_id: str, rank: int, attempt: int) -> list[dict]:
    """What report_and_sleep.py printed in that attempt of that rank on NODE (one line per worker)."""
    lines = log_of(node, job_id, rank, attempt).splitlines()
    return [json.loads(line.split("REPORT ", 1)[1]) for line in lines if "REPORT " in line]


def launch(cli, nodes, members, spares, workdir, *extra, executor="distributed") -> str:
    cluster = {node.name: {**nodes.host_vars(node), "tsubmit_gpus": 1} for node in members}
    cluster.update({node.name: {**nodes.host_vars(node), "tsubmit_gpus": 1, "tsubmit_spare": True}
                    for node in spares})
    path = cli.home / "config" / "clusters" / "c.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"all": {"hosts": cluster}}, sort_keys=False))
    job_id = start(cli, "-c", "c", "--executor", executor, "--restarts", "2", "--node-timeout", NODE_TIMEOUT,
                   *extra, "--workdir", str(workdir), "--", "python", "report_and_sleep.py")
    for rank, node in enumerate(members):
        eventually(lambda n=node, r=rank: report(n, job_id, r, 1), timeout=120,
                   message=f"rank {rank} running")
    return job_id
