"""What a playbook run left behind, read after it: per-task spans from
ansible-runner's job events, the probes' reports, ssh invocations per task
from a -vvvv run, and the controller CPU per task that the bench's task_cpu
callback (callbacks/task_cpu.py) recorded."""

from __future__ import annotations

import glob
import json
import re
from datetime import datetime
from pathlib import Path

from common import BENCH, SLEEP, TSUBMIT, job_id_of, median, run_dirs, run_timed


def task_summary(run_dir: str) -> dict:
    """Per-task spans of one playbook run from runner's job_events."""
    files = glob.glob(f"{run_dir}/artifacts/*/job_events/*.json")
    files.sort(key=lambda f: int(Path(f).name.split("-")[0]))

    def ts(text):
        return datetime.fromisoformat(text).timestamp()

    tasks: dict[str, dict] = {}
    order: list[str] = []
    playbook_start = playbook_end = None
    for path in files:
        event = json.loads(Path(path).read_text())
        data = event.get("event_data", {})
        created = ts(event["created"])
        kind = event["event"]
        if kind == "playbook_on_start":
            playbook_start = created
        elif kind == "playbook_on_stats":
            playbook_end = created
        elif kind == "playbook_on_task_start":
            name = data.get("task", "")
            if name not in tasks:
                order.append(name)
                tasks[name] = {"start": created, "end": created, "durations": [], "outcomes": {}}
        elif kind in ("runner_on_ok", "runner_on_skipped", "runner_on_failed", "runner_on_unreachable"):
            task = tasks.get(data.get("task", ""))
            if task is None:
                continue
            outcome = kind.removeprefix("runner_on_")
            task["outcomes"][outcome] = task["outcomes"].get(outcome, 0) + 1
            if data.get("duration") is not None:
                task["durations"].append(float(data["duration"]))
            task["end"] = max(task["end"], ts(data["end"]) if data.get("end") else created)
    rows = []
    for name in order:
        task = tasks[name]
        rows.append({
            "task": name,
            "span": task["end"] - task["start"],
            "median_host": median(task["durations"]) or 0.0,
            "max_host": max(task["durations"], default=0.0),
            "outcomes": task["outcomes"],
        })
    return {"playbook_start": playbook_start, "playbook_end": playbook_end, "tasks": rows}


def probe_reports(run_dir: str) -> list[dict]:
    """What the preflight probe printed on each node of one submit run."""
    reports = []
    for path in glob.glob(f"{run_dir}/artifacts/*/job_events/*.json"):
        event = json.loads(Path(path).read_text())
        data = event.get("event_data", {})
        if event["event"] == "runner_on_ok" and data.get("task", "").startswith("Probe the node"):
            reports.append(json.loads(data["res"]["stdout"]))
    return reports



def count_round_trips(home: Path, env: dict, cluster: str, wd: Path) -> dict:
    """One untimed submit with -vvvv: ssh invocations per task for one host."""
    before = run_dirs(home, "submit")
    result = run_timed([*TSUBMIT, "-vvvv", "run", "-c", cluster, "--executor", "distributed", "--", *SLEEP],
                       env=env, cwd=wd).check("tsubmit -vvvv run")
    new = sorted(run_dirs(home, "submit") - before)
    counts: dict[str, dict[str, int]] = {}
    order: list[str] = []
    task = "(before the first task)"
    for stdout in glob.glob(f"{new[-1]}/artifacts/*/stdout"):
        for line in Path(stdout).read_text(errors="replace").splitlines():
            if line.startswith("TASK ["):
                task = line[len("TASK ["):line.rfind("]")]
                if task not in counts:
                    order.append(task)
                    counts[task] = {"exec": 0, "put": 0}
            elif re.match(r"<\S+> SSH: EXEC ", line):
                kind = "put" if re.search(r"\b(sftp|scp)\b", line.split("SSH: EXEC", 1)[1][:200]) else "exec"
                counts.setdefault(task, {"exec": 0, "put": 0})[kind] += 1
    return {"job": job_id_of(result), "order": order, "counts": counts}



def task_cpu_env(env: dict, output: Path) -> dict:
    """ENV with the task_cpu callback on, writing its record to OUTPUT. Only
    for untimed runs: at each task boundary the callback waits for the last
    task's workers to be reaped, so their CPU counts for their own task."""
    return {**env, "ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callbacks"),
            "ANSIBLE_CALLBACKS_ENABLED": "task_cpu", "TSUBMIT_BENCH_TASK_CPU": str(output)}


def read_task_cpu(output: Path, tree_cpu: float, tsubmit_cpu: float) -> dict:
    """The callback's record, with TREE_CPU (the whole `tsubmit` process
    tree's CPU seconds) and TSUBMIT_CPU (the tsubmit process itself: Python,
    its imports, the archive, the job store, runner and its event handling);
    what is left is ansible-playbook's, whose exit follows the callback's
    last reading."""
    record = json.loads(output.read_text())
    record.update(tree_cpu=tree_cpu, tsubmit_cpu=tsubmit_cpu,
                  ansible_exit_cpu=tree_cpu - tsubmit_cpu - record["playbook_cpu"])
    return record
