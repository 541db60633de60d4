"""`--sync-dir`: a job's checkpoint folders follow it to its next attempt.

Before attempt k+1 launches (run.relaunch: `tsubmit restart` and every
relaunch the watcher makes), the newest copy of each folder the job syncs
(job.extras["recovery"]["sync_dirs"], relative to its workdir) is copied to
every node of the next attempt, through the controller (nodes cannot be
assumed to reach one another):

1. sync_probe.yml, on every node of the ending attempt and of the next: which
   filesystem the node's remote root is on (a marker file the first probe
   writes there, so hosts that share the root, one machine or one NFS export,
   read the same one) and when each folder was last written there.
2. The source of each folder: the node of rank 0 of the ending attempt, else
   (that node lost, or without a copy) the reachable node whose copy was
   written last.
3. sync_dirs.yml: each source packs its folders into one tar file, fetched to
   the controller; then one node of each filesystem of the next attempt that
   does not already hold the source's copy receives them, one stream per
   node, and swaps them in by renames.

A node of the next attempt that cannot be reached, or a copy that cannot be
brought or placed, fails the sync naming the host: the relaunch does not
proceed. The folders are data: they reach the nodes as Ansible's unsafe
extra-vars and the node scripts' arguments, never a shell's or a template's
text.
"""

from __future__ import annotations

import posixpath
import secrets
import shutil
import time
from dataclasses import dataclass, field

from ..errors import LaunchError, UsageError
from ..model import executors, layout
from ..model.job import Job
from ..model.workdir_paths import inside_workdir
from ..nodes.ansible_run import run_playbook
from ..paths import ensure_private_dir, state_dir

OPTION = "--sync-dir"


def check_paths(paths) -> list[str]:
    """PATHS normalised, each a folder inside the job's workdir; else a
    UsageError naming the option and the path."""
    checked = inside_workdir(paths, OPTION, "a folder relative to the job's workdir, e.g. ckpt")
    if "." in checked:
        raise UsageError(f"{OPTION} . is the whole workdir; give a folder inside it, e.g. ckpt")
    return checked


def paths_of(job: Job) -> list[str]:
    return list(job.recovery.get("sync_dirs") or [])


def study_of(job: Job) -> str | None:
    """The study of an Optuna job whose store is the head's SQLite file, else None."""
    optuna = job.extras.get("optuna") or {}
    if not executors.get(job.executor).study_store or optuna.get("storage"):
        return None
    return optuna.get("study") or job.name


# The study file among the synced items. Like a folder it goes to every node: the
# head serves it, and a copy elsewhere is what is left when the head is lost.
STUDY = "the Optuna study"


@dataclass
class Probe:
    """What one node said: its absolute remote root, its filesystem, and when
    each item was last written there (None: no copy)."""

    root: str
    filesystem: str
    written: dict[str, float | None]


@dataclass
class Synced:
    """What a sync did: the source of each item, the nodes that received them."""

    sources: dict[str, str] = field(default_factory=dict)  # folder (or STUDY) -> host
    sent_to: list[str] = field(default_factory=list)
    size: int = 0  # bytes brought to the controller
    seconds: float = 0.0


def sync(job: Job, the_plan, *, verbose: int = 0) -> Synced | None:
    """Copy the newest copy of JOB's synced folders, and of an Optuna job's study
    file, to every node of THE_PLAN (its next attempt); JOB's ranks are the
    ending attempt's. None when there is nothing to sync."""
    paths, study = paths_of(job), study_of(job)
    ending = [rank.host for rank in sorted(job.ranks, key=lambda rank: rank.rank)]
    nodes = [node.name for node in the_plan.cluster.nodes]
    if not paths and not study:
        return None
    started = time.monotonic()
    items = paths + ([STUDY] if study else [])
    what = f"cannot sync {', '.join(items)} of job {job.id} to its next attempt"
    hosts = list(dict.fromkeys(ending + nodes))
    studies = _study_files(study, the_plan, hosts)
    probes = _probe(job, the_plan, hosts, nodes, paths, studies, what, verbose)
    sources = _sources(ending, probes, items)
    synced = Synced(sources=dict(sources))
    # One node of each filesystem, first in rank order, receives what its filesystem lacks.
    receivers: dict[str, list[str]] = {}
    seen: set[str] = set()
    for host in nodes:
        filesystem = probes[host].filesystem
        if filesystem in seen:
            continue
        seen.add(filesystem)
        wanted = [item for item, source in sources.items() if probes[source].filesystem != filesystem]
        if wanted:
            receivers[host] = wanted
    if receivers:
        synced.size = _transfer(job, the_plan, paths, studies, probes, sources, receivers, what, verbose)
        synced.sent_to = list(receivers)
    synced.seconds = time.monotonic() - started
    return synced


def _study_files(study: str | None, the_plan, hosts: list[str]) -> dict[str, str]:
    """Each host's study file (launch_contract.study_file), where the optuna_store
    role keeps it: its studies dir when the inventory sets one for the host."""
    if not study:
        return {host: "" for host in hosts}
    folders = {node.name: node.vars.get("optuna_store_studies_dir") for node in the_plan.cluster.nodes}
    return {host: layout.study_file(study, None, folders.get(host) or None) for host in hosts}


def _sources(ending: list[str], probes: dict[str, Probe], items: list[str]) -> dict[str, str]:
    """item -> the host of its newest copy: rank 0's when it answered and has
    one, else the answering host whose copy was written last."""
    sources = {}
    for item in items:
        copies = [(probes[host].written[item], -order, host) for order, host in enumerate(ending)
                  if host in probes and probes[host].written.get(item) is not None]
        if not copies:
            continue  # nothing was written yet: nothing to sync
        head = next((host for _, _, host in copies if host == ending[0]), None)
        sources[item] = head or max(copies)[2]
    return sources


def _probe(job: Job, the_plan, hosts: list[str], nodes: list[str], paths: list[str], studies: dict[str, str],
           what: str, verbose: int) -> dict[str, Probe]:
    """Each answering host's Probe. A node of the next attempt that did not
    answer, or any host that refused a folder, fails the sync."""
    run = _run(job, the_plan, "sync_probe", hosts, paths,
               {host: {"token": secrets.token_hex(8), "study": studies[host]} for host in hosts}, verbose)
    probes, failures = {}, {}
    for host, result in run.hosts.items():
        if result.status == "unreachable" and host not in nodes:
            continue  # a node of the ending attempt that is gone: not a source
        if result.status != "ok":
            failures[host] = result.message
            continue
        output = result.results.get("Probe the synced folders and the remote root's filesystem", {})
        probes[host] = _parsed(output.get("stdout", ""), paths)
    if failures:
        raise LaunchError(f"{what}; it was not relaunched", failures)
    return probes


def _parsed(stdout: str, paths: list[str]) -> Probe:
    probe = Probe("", "", {})
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "root":
            probe.root = rest
        elif word == "filesystem":
            probe.filesystem = rest.strip()
        elif word in ("dir", "study"):
            number, when = rest.split(" ", 1) if word == "dir" else ("", rest)
            item = paths[int(number) - 1] if word == "dir" else STUDY
            probe.written[item] = None if when.strip() in ("", "-") else float(when)
    return probe


def _transfer(job: Job, the_plan, paths: list[str], studies: dict[str, str], probes: dict[str, Probe],
              sources: dict[str, str], receivers: dict[str, list[str]], what: str, verbose: int) -> int:
    """Pack on each source, fetch to the controller, place on each receiver;
    the bytes brought to the controller."""
    folder = ensure_private_dir(state_dir() / "sync") / f"{job.id}-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o700)
    try:
        senders = list(dict.fromkeys(sources[item] for wanted in receivers.values() for item in wanted))
        bundles = {host: str(folder / f"bundle-{number}.tar") for number, host in enumerate(senders, 1)}
        needed = {item for wanted in receivers.values() for item in wanted}
        plan = {}
        for host in dict.fromkeys(senders + list(receivers)):
            sends = [item for item in [*paths, STUDY] if item in needed and sources.get(item) == host]
            wanted = receivers.get(host, [])
            plan[host] = {
                "pack": [item for item in sends if item != STUDY],
                "pack_dest": bundles.get(host, ""),
                "pack_study": studies[host] if STUDY in sends else "",
                "place": [item for item in wanted if item != STUDY],
                "place_study": studies[host] if STUDY in wanted else "",
                "bundles": [{"name": posixpath.basename(bundles[sender]), "src": bundles[sender]}
                            for sender in dict.fromkeys(sources[item] for item in wanted)],
                "root": probes[host].root,
            }
        run = _run(job, the_plan, "sync_dirs", list(plan), paths, plan, verbose)
        failures = run.failures()
        if failures or run.status != "successful":
            raise LaunchError(f"{what}; it was not relaunched",
                              failures or {"ansible": f"the sync playbook {run.status}; see "
                                                      f"{run.data_dir}/artifacts"})
        return sum(bundle.stat().st_size for bundle in folder.iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(job: Job, the_plan, playbook: str, hosts: list[str], paths: list[str], per_host: dict,
         verbose: int):
    ref = the_plan.cluster.ref
    return run_playbook(playbook, ref.sources, {host: {} for host in hosts},
                        {"tsubmit_job_id": job.id, "tsubmit_sync_paths": paths,
                         "tsubmit_sync_hosts": per_host},
                        vault_password_file=ref.vault_password_file, verbose=verbose)
