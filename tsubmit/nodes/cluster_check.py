"""`tsubmit cluster check`: is every node of a cluster ready to run jobs?

One run of playbooks/check.yml (role `check`) on all nodes in parallel: the
node probe (roles/preflight/files/probe.py, the one `run` uses) on every
node, then a TCP listener on the head's rendezvous address and a connection
to it from each worker. Its results become one
outcome per host per check (ok, warn, fail, skipped), each failure with a
one-line remedy.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..errors import UsageError
from . import ssh
from .ansible_run import HostResult, cluster_hosts, run_playbook
from .clusters import Node, ResolvedCluster
from .ssh_hints import host_key_hint, known_hosts_files, without_next_step

PLAYBOOK = "check"
PROBE_TASK = "Probe the node (python, torch, torchrun, GPUs, free space, clock, container engine)"
LISTEN_TASK = "Listen on the head's rendezvous address for the workers"
CONNECT_TASK = "Connect to the head's rendezvous address"

CHECKS = ("reachable", "python", "torchrun", "gpus", "disk", "clock", "tcp", "container")
OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
MIN_FREE_BYTES = 1 << 30
MAX_CLOCK_SKEW = 5.0

PYTHON_REMEDY = ("install python3 on the node, or set tsubmit_python to its full path "
                 "(a venv or conda env)")
TORCHRUN_REMEDY = "set tsubmit_torchrun to its full path, or tsubmit_python to a venv with torch"


@dataclass
class Outcome:
    status: str
    detail: str = ""
    remedy: str = ""

    def as_dict(self) -> dict:
        return {"status": self.status, "detail": self.detail, "remedy": self.remedy}


@dataclass
class Report:
    cluster: ResolvedCluster
    hosts: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # rank order

    @property
    def ok(self) -> bool:
        return not self.count(FAIL)

    def count(self, status: str) -> int:
        return sum(o.status == status for checks in self.hosts.values() for o in checks.values())

    def problems(self) -> list[tuple[str, str, Outcome]]:
        """(host, check, outcome) of every failure and warning, in rank and check order."""
        return [(host, name, outcome) for host, checks in self.hosts.items()
                for name, outcome in checks.items() if outcome.status in (FAIL, WARN)]

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "cluster": self.cluster.ref.name,
            "head": self.cluster.nodes[0].name,
            "hosts": {host: {name: outcome.as_dict() for name, outcome in checks.items()}
                      for host, checks in self.hosts.items()},
        }


def check_cluster(cluster: ResolvedCluster, *, fix: bool = False, verbose: int = 0) -> Report:
    """Run the check playbook on every node of CLUSTER and judge what it found; with
    FIX, first make each node's shared GPU lease folder as root (become)."""
    # The head named here spares every node a search through all hosts' variables.
    run = run_playbook(PLAYBOOK, cluster.ref.sources, cluster_hosts(cluster),
                       {"check_head_host": cluster.nodes[0].name, "gpu_lease_create_dir": fix},
                       verbose=verbose, vault_password_file=cluster.ref.vault_password_file)
    no_result = f"no result from the check playbook ({run.status}; see {run.data_dir}/artifacts)"
    return build_report(cluster, run.hosts, _probe_windows(run.data_dir), no_result=no_result)


def build_report(cluster: ResolvedCluster, results: dict[str, HostResult],
                 windows: dict[str, tuple[float, float]],
                 *, no_result: str = "no result from the check playbook") -> Report:
    """Outcomes from the playbook's per-host results and, per host, the controller's
    times (epoch seconds) when its probe started and when its result arrived."""
    head = cluster.nodes[0]
    probes = {node.name: _last_json(results[node.name].results.get(PROBE_TASK)) for node in cluster.nodes}
    report = Report(cluster)
    for node in cluster.nodes:
        result, probe = results[node.name], probes[node.name]
        reachable = _reachable(node, result, probe, no_result)
        if reachable.status == FAIL or probe is None:
            skipped = Outcome(SKIPPED, "unreachable" if result.status == "unreachable" else "no probe")
            checks = dict.fromkeys(CHECKS, skipped)
            checks["reachable"] = reachable
        elif "torchrun" not in probe:  # the probe's answer on a node without python
            checks = dict.fromkeys(CHECKS, Outcome(SKIPPED, "no python on the node to probe with"))
            checks.update(reachable=reachable, python=_python(probe),
                          clock=_clock(probe, windows.get(node.name)), tcp=_tcp(node, head, results, probes))
        else:
            checks = {
                "reachable": reachable,
                "python": _python(probe),
                "torchrun": _torchrun(probe),
                "gpus": _with_leases(_gpus(node, probe), results[node.name]),
                "disk": _disk(probe),
                "clock": _clock(probe, windows.get(node.name)),
                "tcp": _tcp(node, head, results, probes),
                "container": _container(probe),
            }
        report.hosts[node.name] = checks
    _compare_torch(report, probes)
    _same_machines(report, results)
    return report


# --- one outcome per check --------------------------------------------------------------


def _reachable(node: Node, result: HostResult, probe: dict | None, no_result: str) -> Outcome:
    message = without_next_step(result.message.removeprefix("Task failed: "))
    if result.status == "unreachable":
        return Outcome(FAIL, message, _ssh_remedy(node, message))
    if result.status == "failed" and probe is None:
        return Outcome(FAIL, message or "the probe failed",
                       "run `tsubmit -vv cluster check` to see what Ansible reports")
    if probe is None:
        return Outcome(FAIL, no_result)
    return Outcome(OK, _ssh_target(node))


def _python(probe: dict) -> Outcome:
    """tsubmit_python runs every verb's node-side Python (status, Optuna); the
    interpreter of Ansible's own modules (hooks' tasks) is checked too, because
    on a node whose first python3.13 on PATH is a stale shim, discovery picks it."""
    python = probe.get("python") or {}
    if not python.get("found"):
        return Outcome(FAIL, python.get("error") or "python not found", PYTHON_REMEDY)
    detail = f"Python {python.get('version')} ({python.get('path')})"
    modules = probe.get("module_python") or {}
    if modules.get("error"):
        if modules.get("declared"):
            return Outcome(FAIL, f"{detail}; ansible_python_interpreter: {modules['error']}",
                           f"set ansible_python_interpreter to a python that runs, e.g. "
                           f"{python.get('path')} (Python modules of hooks run with it)")
        return Outcome(WARN, f"{detail}; Ansible's interpreter discovery would pick "
                       f"{modules['error']}", f"tsubmit's own steps do not use it, but Python "
                       f"modules in hooks would: set ansible_python_interpreter (e.g. to "
                       f"{python.get('path')}) or fix the node's PATH")
    return Outcome(OK, detail)


def _torchrun(probe: dict) -> Outcome:
    torchrun, torch = probe.get("torchrun") or {}, probe.get("torch") or {}
    if not torchrun.get("found"):
        return Outcome(FAIL, torchrun.get("error") or "torchrun not found", TORCHRUN_REMEDY)
    if torch.get("version"):
        return Outcome(OK, f"torch {torch['version']} ({torchrun.get('path')})")
    if torch.get("error"):
        return Outcome(FAIL, torch["error"], TORCHRUN_REMEDY)
    return Outcome(WARN, f"{torchrun.get('path')} found; no python to read its torch version",
                   PYTHON_REMEDY)


def _gpus(node: Node, probe: dict) -> Outcome:
    gpus = probe.get("gpus") or {}
    declared, count = node.gpus, gpus.get("count")
    if gpus.get("error"):
        return Outcome(FAIL, gpus["error"], "fix the node's NVIDIA driver: `nvidia-smi --list-gpus` "
                       "must list its GPUs")
    if not gpus.get("nvidia_smi"):
        if declared is None or declared == 1:
            return Outcome(OK, "no nvidia-smi: one CPU process per node" if declared is None
                           else "no nvidia-smi: 1 CPU process declared")
        return Outcome(WARN, f"no nvidia-smi, tsubmit_gpus={declared}: {declared} CPU processes",
                       "fine on a CPU node; on a GPU node install the NVIDIA driver (nvidia-smi)")
    count = count or 0
    if declared is None:
        return Outcome(OK, f"{count} GPU(s) seen, {max(count, 1)} process(es) per node")
    if count < declared:
        return Outcome(FAIL, f"{count} GPU(s) seen by nvidia-smi, tsubmit_gpus={declared}",
                       f"set tsubmit_gpus to {count} or fewer on this host, or check its GPUs "
                       "(nvidia-smi --list-gpus)" if count else
                       "check the node's GPUs (nvidia-smi --list-gpus), or unset tsubmit_gpus")
    return Outcome(OK, f"{count} GPU(s) seen, tsubmit_gpus={declared}")


def _with_leases(outcome: Outcome, result: HostResult) -> Outcome:
    """The GPU check's detail, with who leases the node's GPUs now (every user's jobs),
    and whether their lease folder is one every user shares and none can subvert."""
    from .gpu_leases import USAGE_TASK, describe_lease

    if USAGE_TASK not in result.results and result.status == "failed":
        # The usage task never fails the check: what failed is --fix (the folder, as root).
        return Outcome(FAIL, f"cannot make the shared GPU lease folder as root: {result.message}",
                       "the node's user must be allowed to become root (sudo; ansible_become_method "
                       "and ansible_become_password in the inventory), or have root make it owned by "
                       "root, mode 1777 (tsubmit_gpu_lease_dir)")
    usage = _last_json(result.results.get(USAGE_TASK))
    if not usage or not usage.get("gpus"):
        return outcome
    if usage.get("problem"):
        return Outcome(FAIL, usage["problem"], "tsubmit cluster check --fix")
    leases = usage.get("leases") or []
    held = "; ".join(f"leased by {describe_lease(lease)}" for lease in leases)
    detail = f"{outcome.detail}; {len(usage['free'])} of {len(usage['gpus'])} free" + (f", {held}" if held
                                                                                       else "")
    if usage.get("note"):  # the node's GPUs are not shared safely: at least a warning
        return Outcome(FAIL if outcome.status == FAIL else WARN, f"{detail}; {usage['note']}",
                       "; ".join(filter(None, [outcome.remedy, "tsubmit cluster check --fix"])))
    return Outcome(outcome.status, detail, outcome.remedy)


def _disk(probe: dict) -> Outcome:
    disk = probe.get("disk") or {}
    root = disk.get("root") or "the remote root"
    if disk.get("error") or disk.get("free_kb") is None:
        return Outcome(FAIL, disk.get("error") or f"free space of {root} unknown",
                       "set tsubmit_remote_root to a folder the SSH user can create and write")
    free = int(disk["free_kb"]) * 1024
    detail = f"{_size(free)} free in {root}"
    if free < MIN_FREE_BYTES:
        return Outcome(FAIL, detail, f"free space in {root} (1 GiB at least), or set "
                       "tsubmit_remote_root to a larger file system")
    return Outcome(OK, detail)


def _clock(probe: dict, window: tuple[float, float] | None) -> Outcome:
    """The node read its clock while the probe ran: after the controller started
    the task and before the answer arrived. Only a time outside that window is
    skew; the window itself is latency (a loaded controller, a slow link)."""
    node_time = probe.get("time")
    if window is None or not isinstance(node_time, int | float):
        return Outcome(SKIPPED, "no timestamp to compare")
    started, arrived = window
    skew = max(float(node_time) - arrived, 0.0) + min(float(node_time) - started, 0.0)
    detail = f"{skew:+.2f}s against this machine ({arrived - started:.2f}s round trip)"
    if abs(skew) > MAX_CLOCK_SKEW:
        return Outcome(FAIL, detail, "synchronise the clocks (chrony, systemd-timesyncd or ntpd on "
                       "the node and here): logs and timeouts compare times across nodes")
    return Outcome(OK, detail)


def _tcp(node: Node, head: Node, results: dict[str, HostResult], probes: dict) -> Outcome:
    python_found = (probes[node.name].get("python") or {}).get("found")
    head_remedy = (f"set tsubmit_rdzv_address of {head.name} to an address of that node on a "
                   "network the workers share")
    if node is head:
        if not python_found:
            return Outcome(FAIL, "no python on the head to listen with", PYTHON_REMEDY)
        listener = _last_json(results[node.name].results.get(LISTEN_TASK))
        if listener is None:
            return Outcome(SKIPPED, "the listener did not run")
        if listener.get("port"):
            return Outcome(OK, f"listening on {_endpoint(head.address, listener['port'])}")
        return Outcome(FAIL, listener.get("error") or "cannot listen", head_remedy)
    if not python_found:
        return Outcome(FAIL, "no python on the node to connect with", PYTHON_REMEDY)
    head_probe = probes.get(head.name)
    listener = _last_json(results[head.name].results.get(LISTEN_TASK)) or {}
    if not listener.get("port"):
        why = ("is unreachable" if results[head.name].status == "unreachable" or head_probe is None
               else "could not listen")
        return Outcome(SKIPPED, f"the head ({head.name}) {why}")
    endpoint = _endpoint(head.address, listener["port"])
    connection = _last_json(results[node.name].results.get(CONNECT_TASK))
    if connection is None:
        return Outcome(SKIPPED, "the connection test did not run")
    if connection.get("status") == "ok":
        return Outcome(OK, f"reached {endpoint}")
    detail = f"cannot reach {endpoint}: {connection.get('detail') or connection.get('status')}"
    return Outcome(FAIL, detail, f"the worker cannot reach {endpoint}: set tsubmit_rdzv_address "
                   "to the head's address on a network the workers share, or open the firewall")


def _container(probe: dict) -> Outcome:
    container = probe.get("container") or {}
    engine = container.get("engine")
    if not engine:
        return Outcome(SKIPPED, "no tsubmit_container_engine declared")
    if container.get("found"):
        return Outcome(OK, container.get("version") or container.get("path") or engine)
    return Outcome(FAIL, f"{engine} not found",
                   "install it on the node, or set tsubmit_container_engine to its full path")


def _compare_torch(report: Report, probes: dict) -> None:
    """A torch version that differs from the other nodes' is a warning on that host."""
    versions = {
        host: ((probes.get(host) or {}).get("torch") or {}).get("version")
        for host, checks in report.hosts.items() if checks["torchrun"].status == OK
    }
    versions = {host: version for host, version in versions.items() if version}
    if len(set(versions.values())) < 2:
        return
    counts = Counter(versions.values())
    # The most common version; among equals, the one nearest the head.
    reference = max(counts, key=lambda v: (counts[v], -list(versions.values()).index(v)))
    for host, version in versions.items():
        if version != reference:
            others = counts[reference]
            report.hosts[host]["torchrun"] = Outcome(
                WARN, f"torch {version} here, {reference} on {others} other node(s)",
                "install the same torch version on every node (mixed versions fail or hang at "
                "rendezvous)")


def _same_machines(report: Report, results: dict[str, HostResult]) -> None:
    """Hosts that are one machine (one boot id) leasing in one folder: a job on
    them has its own ranks compete for the GPUs (loopback nodes, VMs sharing /dev/shm)."""
    from .gpu_leases import USAGE_TASK

    machines: dict[tuple[str, str], list[str]] = {}
    for host in report.hosts:
        usage = _last_json(results[host].results.get(USAGE_TASK)) or {}
        if usage.get("gpus") and usage.get("boot_id") and usage.get("lease_dir"):
            machines.setdefault((usage["boot_id"], usage["lease_dir"]), []).append(host)
    for (_, folder), hosts in machines.items():
        for host in hosts if len(hosts) > 1 else []:
            gpus = report.hosts[host]["gpus"]
            others = ", ".join(other for other in hosts if other != host)
            report.hosts[host]["gpus"] = Outcome(
                FAIL if gpus.status == FAIL else WARN,
                f"{gpus.detail}; the same machine as {others} (one boot id), sharing the GPU lease folder "
                f"{folder}: a job on both has its own ranks compete for these GPUs",
                f"give each host its own folder: tsubmit cluster edit {report.cluster.ref.name} "
                f"--host {host} --lease-dir {folder}-{host} (tsubmit_gpu_lease_dir), or list the "
                "machine once")


# --- helpers ----------------------------------------------------------------------------


def _last_json(result: dict | None) -> dict | None:
    """The JSON object a script printed last, or None."""
    if not result:
        return None
    for line in reversed(str(result.get("stdout") or "").splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _probe_windows(data_dir: Path) -> dict[str, tuple[float, float]]:
    """When each host's probe started and when its result reached the controller:
    the `created` of its runner events (runner_on_start, runner_on_ok)."""
    times: dict[str, dict[str, float]] = {}
    for path in data_dir.glob("artifacts/*/job_events/*.json"):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        data = event.get("event_data") or {}
        if event.get("event") not in ("runner_on_start", "runner_on_ok") or data.get("task") != PROBE_TASK:
            continue
        try:
            created = datetime.fromisoformat(event["created"])
        except (KeyError, TypeError, ValueError):
            continue
        if created.tzinfo is None:  # older runners wrote naive UTC times
            created = created.replace(tzinfo=UTC)
        times.setdefault(data.get("host"), {})[event["event"]] = created.timestamp()
    return {host: (seen.get("runner_on_start", seen["runner_on_ok"]), seen["runner_on_ok"])
            for host, seen in times.items() if "runner_on_ok" in seen}


def _connection(node: Node) -> ssh.Connection:
    """The node's connection as tsubmit's own ssh commands read it (tsubmit/nodes/ssh.py).
    One tsubmit would not open itself (another connection plugin, a template that
    needs facts) is Ansible's alone: named by the inventory's name."""
    try:
        return ssh.connection(node.name, node.vars)
    except UsageError:
        return ssh.Connection(node.name, local=False, address=node.name)


def _ssh_target(node: Node) -> str:
    return ssh.target(_connection(node))


def _ssh_remedy(node: Node, message: str) -> str:
    command = ssh.login_hint(_connection(node))
    ssh_args = " ".join(str(node.vars.get(key) or "")
                        for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    hint = host_key_hint(message, ssh_args)
    if hint:
        files = " or ".join(known_hosts_files(ssh_args))
        return f"{hint}; ssh reads {files} for this host ({command})"
    return (f"check the address, port and user in the inventory, and that your key is accepted "
            f"({command})")


def _endpoint(address: str, port) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
