"""GPU leases, as the controller sees them: what a busy node reported, who
holds its GPUs, `cluster usage`, and the queue of `run --queue`.

The leases themselves live on the nodes (roles/gpu_lease/files/gpu_lease.py):
each rank takes its own when it starts, all-or-nothing across the job's
nodes because a node that cannot lease fails the launch, whose rollback
stops the ranks that did (their leases end with their processes).
"""

import getpass
import json
import re
import socket
import sys
import time
from dataclasses import dataclass

from ..errors import EXIT_BUSY, LaunchError
from ..interrupts import Interrupted
from . import progress
from .ansible_run import cluster_hosts, run_playbook
from .clusters import ResolvedCluster

# What a rank's launch script prints when its node has too few free GPUs
# (roles/launch/templates/gpu_lease.sh.j2), followed by the helper's report.
BUSY_MARK = "tsubmit-gpus-busy "
USAGE_TASK = "Report the node's GPUs and their leases"
# Seconds between two looks at the nodes while a job is queued.
QUEUE_POLL = 2.0


class GpusBusy(LaunchError):
    """The job's GPUs are leased by other jobs on some node (exit 5); what each
    busy node has and who holds its GPUs is printed one node a line (host_errors)."""

    exit_code = EXIT_BUSY

    def __init__(self, message: str, reports: dict[str, dict]):
        super().__init__(f"{message}: GPUs busy on {', '.join(reports)}",
                         {host: node_busy(report) for host, report in reports.items()})
        self.reports = reports  # the busy nodes' reports, by host


def submitter() -> str:
    """Who submits, as a lease names them to every user of the node."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def busy_report(message: str) -> dict | None:
    """The helper's report in a failure message, when the failure is a busy node."""
    match = re.search(re.escape(BUSY_MARK) + r"(\{.*\})", message)
    if not match:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def busy_nodes(failures: dict[str, str]) -> dict[str, dict]:
    """{host: report} when every failure of a launch is a busy node, else {}:
    a node that failed for another reason makes it a launch failure (exit 3)."""
    reports = {host: busy_report(message) for host, message in failures.items()}
    return reports if reports and all(reports.values()) else {}


def lease_rank(lease: dict) -> tuple[int, int] | None:
    """(rank, attempt) of a lease, from its file name (<job id>.r<rank>.a<attempt>.lease)."""
    found = re.search(r"\.r(\d+)\.a(\d+)\.lease$", lease.get("lease", ""))
    return (int(found.group(1)), int(found.group(2))) if found else None


def one_machine(job, busy: dict[str, dict]) -> str | None:
    """When a busy node's GPUs are held by another rank of this attempt of JOB, its
    hosts are one machine leasing in one folder (loopback nodes, VMs sharing
    /dev/shm): what to tell the user, else None. Waiting (--queue) would never help."""
    hosts = [rank.host for rank in job.ranks]
    for host, report in busy.items():
        for lease in report.get("leases", []):
            rank, attempt = lease_rank(lease) or (len(hosts), 0)
            if lease.get("job_id") != job.id or attempt != job.attempt or rank >= len(hosts) \
                    or hosts[rank] == host:
                continue
            other, folder = hosts[rank], report.get("lease_dir", "")
            return (f"{other} and {host} are one machine sharing the GPU lease folder {folder}, so the job's "
                    f"own ranks compete for its GPUs (job {job.id} rank {rank} holds "
                    f"{','.join(map(str, lease.get('gpus', [])))}). Give each host its own folder, e.g. "
                    f"`tsubmit cluster edit {job.cluster} --host {host} --lease-dir {folder}-{host}` "
                    "(tsubmit_gpu_lease_dir), or list the machine once")
    return None


def describe_lease(lease: dict) -> str:
    rank = lease_rank(lease)
    name = f" ({lease['job_name']})" if lease.get("job_name") else ""
    return (f"job {lease.get('job_id') or '?'}{name}"
            + (f" rank {rank[0]}" if rank else "")
            + f" of {lease.get('user', '?')}, submitted from {lease.get('submitted_by') or '?'}, "
            f"GPUs {','.join(map(str, lease.get('gpus', [])))} since "
            + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.get("since", 0))))


def busy_message(busy: dict[str, dict]) -> str:
    """One clause per busy node: how many free of what it wanted, and who holds the rest."""
    return "GPUs busy: " + " | ".join(f"{host} {node_busy(report)}" for host, report in busy.items())


def node_busy(report: dict) -> str:
    holders = "; ".join(describe_lease(lease) for lease in report.get("leases", [])) or "no one"
    return (f"has {len(report.get('free', []))} of {len(report.get('gpus', []))} GPUs free, "
            f"the job wants {report.get('wanted')}; held by {holders}")


@dataclass
class NodeUsage:
    host: str
    report: dict | None  # the helper's: gpus, free, leases, lease_dir, shared, note
    error: str | None = None

    def as_dict(self) -> dict:
        if self.report is None:
            return {"host": self.host, "error": self.error}
        return {"host": self.host, "gpus": self.report["gpus"], "free": self.report["free"],
                "lease_dir": self.report["lease_dir"], "leases": self.report["leases"],
                # False: a folder of this user's own, which shares with no one ("note" says why).
                "shared": self.report.get("shared", True), "note": self.report.get("note") or ""}


def usage(cluster: ResolvedCluster, *, verbose: int = 0) -> list[NodeUsage]:
    """Every node's GPUs and live leases, read from the nodes (every user's jobs)."""
    run = run_playbook("usage", cluster.ref.sources, cluster_hosts(cluster), {}, verbose=verbose,
                       vault_password_file=cluster.ref.vault_password_file)
    found = []
    for node in cluster.nodes:
        result = run.hosts.get(node.name)
        if result is None:
            found.append(NodeUsage(node.name, None, f"no result ({run.status})"))
        elif result.status in ("failed", "unreachable"):
            found.append(NodeUsage(node.name, None, result.message))
        else:
            stdout = result.results.get(USAGE_TASK, {}).get("stdout", "")
            found.append(NodeUsage(node.name, json.loads(stdout.strip().splitlines()[-1])))
    return found


def short_of(usages: list[NodeUsage], wanted: int | None) -> dict[str, dict]:
    """{host: report} of the nodes that cannot lease WANTED GPUs now (None: all of theirs)."""
    short = {}
    for node in usages:
        if node.report is None:
            raise LaunchError("cannot read the GPU leases of every node", {node.host: node.error})
        report = node.report
        need = len(report["gpus"]) if wanted is None else wanted
        if report["gpus"] and len(report["free"]) < need:
            short[node.host] = {**report, "wanted": need}
    return short


def wait_until_free(the_plan, short: dict[str, dict], deadline: float | None, *, verbose: int = 0) -> None:
    """Wait until every node of THE_PLAN can lease its GPUs (SHORT: the busy
    nodes' reports); exit 5 at DEADLINE (time.monotonic()), 130 on Ctrl-C."""
    say, poll = _Waiting(), QUEUE_POLL
    try:
        while short:
            say(f"queued: {busy_message(short)}")
            if deadline is not None and time.monotonic() >= deadline:
                raise GpusBusy("still queued after --queue-timeout; nothing was started", short)
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
            with progress.shown(False):  # the queued line says it all
                short = short_of(usage(the_plan.cluster, verbose=verbose), the_plan.job.gpus)
    except KeyboardInterrupt:
        raise Interrupted("interrupted while queued for GPUs; nothing was started or recorded") from None


class _Waiting:
    """What a queued job waits for: rewritten in place on a terminal, a
    timestamped line in a log (cron) each time it changes."""

    def __init__(self, stream=None):
        from ..output import interactive

        self.stream = stream or sys.stderr
        self.live = interactive(self.stream)
        self.last = ""

    def __call__(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K" + text[: 200])
        elif text != self.last:
            self.stream.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + f"tsubmit: {text}\n")
        self.stream.flush()
        self.last = text
