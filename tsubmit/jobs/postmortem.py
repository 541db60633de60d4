"""Post-mortems: what a job's ranks were doing when it failed or hung.

collect() is the one collection, called where a failure is found
(lifecycle.refresh, before the other ranks are stopped) and where a hang is:
one playbook run over every node of the job (playbooks/postmortem.yml, the
postmortem role's node-side script) gathers each rank's last log lines, a
stack of each of its processes (py-spy for Python, else state, wchan and the
kernel stack) and nvidia-smi's output. It is kept on the controller, one file
per attempt under the state folder, and what could not be had is said there,
never left out: a node that is gone, a node without py-spy, processes of
another user, ranks that had ended before the failure was found.
"""

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

from ..model import layout
from ..model.job import Job, Rank
from ..nodes.actions import job_hosts, run_for_job
from ..paths import ensure_private_dir, state_dir

TASK = "Collect the post-mortem of every rank on the node"
LOG_LINES = 200
# The top frame of a py-spy dump's first thread: "    function (file.py:LINE)".
_FRAME = re.compile(r"^\s+(\S.*\(.*:\d+\))\s*$", re.M)


def folder(job_id: str) -> Path:
    return state_dir() / "postmortems" / job_id


def path(job_id: str, attempt: int) -> Path:
    return folder(job_id) / f"attempt-{attempt}.json"


def exists(job: Job) -> bool:
    return path(job.id, job.attempt).exists()


def collect(job: Job, reason: str, *, hung: Sequence[Rank] = (), verbose: int = 0) -> dict:
    """Collect and keep the post-mortem of JOB's current attempt; REASON says
    why ("failed", "hang"), HUNG are the ranks found hung (each entry of those
    says for how long their log had not grown: hung_for). Returns it (load's shape)."""
    ranks = {rank.host: [{"key": str(rank.rank), "dir": layout.attempt_dir(job.id, rank.rank, job.attempt),
                          "marker": layout.marker(job.id, rank.rank, job.attempt), "lines": LOG_LINES}]
             for rank in job.ranks}
    hosts = {host: {**vars_, "postmortem_ranks": ranks[host]} for host, vars_ in job_hosts(job).items()}
    run = run_for_job(job, "postmortem", {}, hosts=hosts, verbose=verbose)
    report: dict = {"job": job.id, "name": job.name, "attempt": job.attempt, "reason": reason,
                    "collected_at": time.time(), "ranks": [], "nodes": {}}
    for rank in job.ranks:
        outcome = run.hosts.get(rank.host)
        found = _parse(outcome.results.get(TASK, {})) if outcome and outcome.status == "ok" else None
        entry = {"rank": rank.rank, "host": rank.host, "address": rank.address, "state": rank.state,
                 "exit_code": rank.exit_code, "log": [], "processes": [], "missing": []}
        if rank in hung:
            entry["hung_for"] = rank.log_idle
        if found is None:
            why = outcome.message if outcome else "no result from the post-mortem playbook"
            entry["missing"].append(f"nothing from {rank.host}: {why}")
        else:
            report["nodes"][rank.host] = {key: found.get(key) for key in ("py_spy", "nvidia_smi", "missing")}
            entry.update({key: value for key, value in found["ranks"].get(str(rank.rank), {}).items()
                          if key in ("log", "processes", "py_spy")})
            entry["missing"] += found["ranks"].get(str(rank.rank), {}).get("missing", [])
            if not entry["processes"]:
                entry["missing"].append("stacks: no process of the rank was left to inspect (it had "
                                        "ended when the post-mortem was taken)")
        report["ranks"].append(entry)
    target = path(job.id, job.attempt)
    ensure_private_dir(target.parent)
    target.write_text(json.dumps(report, indent=1))
    return report


def _parse(result: dict) -> dict | None:
    try:
        return json.loads(result.get("stdout") or "")
    except ValueError:
        return None


def load(job: Job, attempt: int) -> dict | None:
    try:
        return json.loads(path(job.id, attempt).read_text())
    except FileNotFoundError:
        return None


def remove(job_id: str) -> None:
    import shutil

    shutil.rmtree(folder(job_id), ignore_errors=True)


def where(process: dict) -> str:
    """Where a process stands, in a few words: its innermost Python frame, else its kernel wait."""
    frame = _FRAME.search(process.get("py_spy") or "")
    if frame:
        return f"in {frame.group(1)}"
    return f"state {process.get('state', '?')}, wchan {process.get('wchan', '?')}"


def summary(report: dict) -> list[str]:
    """One line per rank: its state (how long a hung one had been silent) and where its processes stand."""
    from ..output import duration

    lines = []
    for rank in report["ranks"]:
        state = rank["state"] + (f" (exit {rank['exit_code']})" if rank.get("exit_code") is not None else "")
        if rank.get("hung_for") is not None:
            state += f", hung: no output for {duration(rank['hung_for'])}"
        head = f"rank {rank['rank']} on {rank['host']}: {state}"
        pythons = [p for p in rank["processes"] if p.get("python")] or rank["processes"]
        if pythons:
            head += "; " + "; ".join(f"pid {p['pid']} {where(p)}" for p in pythons)
        elif rank["missing"]:
            head += f"; {rank['missing'][-1]}"
        lines.append(head)
    return lines


def render(report: dict) -> list[str]:
    """The post-mortem as text: the summary first, then each rank's stacks, what
    could not be had, its log's end, and each node's nvidia-smi."""
    collected = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(report["collected_at"]))
    when = "hung" if report["reason"] == "hang" else report["reason"]
    lines = [f"post-mortem of job {report['job']} ({report['name']}), attempt {report['attempt']}, "
             f"taken when it {when}, at {collected}", ""]
    lines += summary(report)
    for rank in report["ranks"]:
        lines += ["", f"== rank {rank['rank']} on {rank['host']} ({rank['address']})"]
        for process in rank["processes"]:
            lines.append(f"-- pid {process['pid']} ({process['user']}, state {process['state']}, "
                         f"wchan {process.get('wchan', '?')}): {process['cmdline']}")
            if process.get("py_spy"):
                lines += process["py_spy"].rstrip().splitlines()
            elif process.get("kernel_stack"):
                lines += process["kernel_stack"].rstrip().splitlines()
            lines += [f"   could not have: {missing}" for missing in process.get("missing", [])]
        lines += [f"could not have: {missing}" for missing in rank["missing"]]
        lines.append(f"-- last {len(rank['log'])} log lines")
        lines += rank["log"]
    for host, node in report["nodes"].items():
        lines += [f"could not have on {host}: {missing}" for missing in node.get("missing") or []]
        if node.get("nvidia_smi"):
            lines += ["", f"== nvidia-smi on {host}", *node["nvidia_smi"].rstrip().splitlines()]
    return lines
