"""Lost nodes, and the nodes of a job's next attempt without them.

A node is lost when it has not answered for longer than the job's node
timeout (--node-timeout): since the first refresh that could not reach it
(Rank.unreachable_since). A lost node's rank goes to a free spare (a host of the job's inventory with
`tsubmit_spare: true` that no other job's attempt runs on and that did not
fail to answer tsubmit's last try): the rank keeps its number, so NODE_RANK
and WORLD_SIZE stay, and a spare that takes rank 0 is the new head. A rank no
spare is left for is dropped when the job allows fewer nodes (`--min-nodes`):
the ranks left are renumbered densely in their order, so the head stays rank
0 (or, the head lost, the first node left becomes it) and WORLD_SIZE shrinks.
With neither, the job cannot go on: NotEnoughNodes names the lost hosts.

The plan's nodes carry the inventory's variables read again, as a restart's
(submit.replan), and the plan is launched by run.relaunch, the one launch
path of every next attempt.
"""

import time

from ..errors import UsageError
from ..local import kept_inventories
from ..local.store import JobStore
from ..model.job import UNREACHABLE, Job
from ..nodes import hooks
from ..nodes.clusters import ClusterRef, Node, ResolvedCluster, host_nodes, resolve
from .plan import Plan
from .request import DEFAULT_NODE_TIMEOUT


class NotEnoughNodes(UsageError):
    """The job lost nodes that neither a spare nor --min-nodes can make up for."""


def node_timeout(job: Job) -> float:
    return job.recovery.get("node_timeout") or DEFAULT_NODE_TIMEOUT


def lost_hosts(job: Job, now: float | None = None) -> list[str]:
    """The job's nodes silent for longer than its node timeout, in rank order."""
    now = time.time() if now is None else now
    return list(dict.fromkeys(rank.host for rank in job.ranks if rank.state == UNREACHABLE
                              and rank.unreachable_since is not None
                              and now - rank.unreachable_since > node_timeout(job)))


def min_nodes(job: Job) -> int:
    """The fewest nodes the job may go on with (--min-nodes; default: all of them)."""
    return job.recovery.get("min_nodes") or len(job.ranks)


def next_plan(job: Job, lost_hosts, *, store: JobStore | None = None) -> Plan:
    """The plan of JOB's next attempt without LOST_HOSTS (see the module's docstring)."""
    lost = set(lost_hosts)
    inventory = job.inventory
    ref = ClusterRef(job.cluster, kept_inventories.next_attempt_sources(inventory),
                     inventory.get("group") or "all", inventory.get("limit"),
                     inventory.get("vault_password_file"))
    spares = free_spares(job, ref, lost, store)
    hosts, reasons = [], []
    for rank in job.ranks:
        if rank.host not in lost:
            hosts.append(rank.host)
        elif spares:
            hosts.append(spares.pop(0))
            reasons.append(f"{hosts[-1]} (a spare) takes rank {rank.rank} of lost {rank.host}")
        else:
            reasons.append(f"rank {rank.rank} of lost {rank.host} is dropped")
    named = ", ".join(sorted(lost))
    fewest = min_nodes(job)
    if len(hosts) < fewest:
        raise NotEnoughNodes(
            f"lost node{'s' if len(lost) > 1 else ''} {named}: no free spare is left to take "
            f"{'their ranks' if len(lost) > 1 else 'its rank'}; nodes left: {len(hosts)} of "
            f"{len(job.ranks)}, fewer than --min-nodes {fewest}")
    found = host_nodes(ref.sources, hosts, ref.vault_password_file, reveal=False)
    kept = {rank.host: rank for rank in job.ranks}
    nodes = []
    for number, host in enumerate(hosts):
        # A node of the job as it was launched (submit.replan); a spare as its inventory says.
        node, own = found[host], kept.get(host)
        nodes.append(Node(host, number, own.address if own else node.address,
                          own.nproc if own else node.gpus, node.vars))
    hooks.check({node.name: node.vars for node in nodes}, hooks.job_extravars(job.extras))
    head = nodes[0].name
    reason = "; ".join(reasons)
    if head != job.ranks[0].host:
        reason += f"; {head} holds rank 0, so it is the head"
    return Plan(job, ResolvedCluster(ref, nodes, reason, spares))


def free_spares(job: Job, ref: ClusterRef, lost: set[str], store: JobStore | None) -> list[str]:
    """The spares of the job's inventory, in its order, that may take a lost rank:
    not the job's own, not lost, not running another job's attempt, and not
    found silent by tsubmit's last try."""
    if store is None:
        from ..local.store import open_store

        store = open_store()
    spares = resolve(ref).spares
    if not spares:
        return []
    taken = {rank.host for other in store.jobs() if other.id != job.id and other.may_run()
             for rank in other.ranks}
    taken |= set(store.silent_hosts()) | lost | {rank.host for rank in job.ranks}
    return [host for host in spares if host not in taken]
