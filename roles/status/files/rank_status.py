"""Report the state of ranks on this node; print one JSON object.

Usage: rank_status.py REMOTE_ROOT JSON
JSON is a list of {"key": ..., "dir": ATTEMPT_DIR, "marker": MARKER}, each an
attempt of a rank as tsubmit lays it out (tsubmit/model/layout.py): its folder
relative to REMOTE_ROOT and its TSUBMIT_RANK_MARKER value, and optionally
"tail": N, the number of its log's last lines wanted when it failed (for a
notification), and "keep": BYTES, how much of its log's end to send once it
ended (the controller keeps that copy: tsubmit/local/kept_logs.py), from byte
"keep_from" on (what the controller's copy already holds is not sent again),
and with "keep_live", also while the rank runs (its complete lines): a node
that is lost cannot be read afterwards. The attempt's files (the layout's pid,
exit_code, leftovers, stopped) say its state; the recorded pid counts only as
tsubmit_procs.is_ours would count it (shipped beside this script). A running
rank says how long its log has not grown ("log_idle", by this node's clock: no
clock skew enters a hang's measure). A rank also runs while a process of this
user carries its marker, such as torchrun's workers after torchrun was killed
("processes": how many).

A rank that failed says why, as far as its files tell ("cause"): under
torchrun, the worker that failed first on the node, from torchrun's failure
summary in output.log (its global and local rank and the worker's own exit
code, not torchrun's 1) and, when the worker recorded one (torch's @record),
the error torchrun copied to torchrun_error.json (TORCHELASTIC_ERROR_FILE).
"""

import json
import os
import re
import subprocess
import sys
import time

import tsubmit_procs


def read_fields(path: str) -> list[str] | None:
    try:
        with open(path) as handle:
            return handle.read().split()
    except OSError:
        return None


def container_state(engine: str, name: str) -> dict | None:
    """The engine's word on a rank's container; None when it has no such container."""
    try:
        inspected = subprocess.run(
            [engine, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inspected.returncode != 0:
        return None
    status, code = inspected.stdout.split()[:2]
    if status in ("running", "created", "configured", "initialized", "paused"):
        return {"state": "running" if status != "created" else "starting"}
    return {"state": "succeeded" if code == "0" else "failed", "exit_code": int(code)}


# What tail and cause read of a log: its end, where torchrun's summary is.
LOG_END_BYTES = 64 * 1024
# torchrun's ChildFailedError summary: the block after "Root Cause", one
# "key : value" line each (torch/distributed/elastic/multiprocessing/errors).
ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):(.*?)(?:={20,}|$)", re.S)
CAUSE_RANK = re.compile(r"^\W*rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)", re.M)
CAUSE_EXIT = re.compile(r"^\W*exitcode\s*:\s*(-?\d+)", re.M)


def log_copy(attempt_dir: str, keep: int, start: int, running: bool) -> dict:
    """The log's bytes from START on, at most its last KEEP from a line's start;
    of a running rank, up to its last complete line (the rest is still being
    written). The report's log_end, and log_from and log_to, where they lie in
    the file."""
    try:
        with open(os.path.join(attempt_dir, "output.log"), "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = start if start <= size else 0
            cut = size - keep > start
            start = max(start, size - keep)
            handle.seek(start)
            data = handle.read(size - start)
    except OSError:
        return {}
    if cut and b"\n" in data:
        skipped = data.index(b"\n") + 1
        start, data = start + skipped, data[skipped:]
    if running:
        data = data[:data.rfind(b"\n") + 1]
    return {"log_end": data.decode(errors="replace"), "log_from": start, "log_to": start + len(data)}


def failure_cause(attempt_dir: str, lines: list[str]) -> dict | None:
    """Under torchrun: the worker that failed first on this node, and its error."""
    summaries = ROOT_CAUSE.findall("\n".join(lines))
    if not summaries:
        return None
    block = summaries[-1]
    ranks, code = CAUSE_RANK.search(block), CAUSE_EXIT.search(block)
    if not ranks or not code:
        return None
    cause = {"worker_rank": int(ranks.group(1)), "local_rank": int(ranks.group(2)),
             "exit_code": int(code.group(1))}
    try:
        with open(os.path.join(attempt_dir, "torchrun_error.json")) as handle:
            recorded = json.load(handle)["message"]
        cause["error"] = str(recorded["message"])[:500]
        if isinstance(recorded.get("errorCode"), int):
            cause["exit_code"] = recorded["errorCode"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return cause


def launcher_traceback(lines: list[str]) -> int:
    """Where torchrun's own traceback (the one ending in its summary) starts."""
    failed = max((i for i, line in enumerate(lines) if "ChildFailedError" in line), default=len(lines))
    return max((i for i, line in enumerate(lines[:failed]) if line.startswith("Traceback (most recent")),
               default=failed)


def log_idle(attempt_dir: str) -> float | None:
    """Seconds since the rank's log last grew (its mtime), by this node's clock."""
    try:
        return round(max(0.0, time.time() - os.path.getmtime(os.path.join(attempt_dir, "output.log"))), 1)
    except OSError:
        return None


def rank_state(attempt_dir: str, processes: int, tail: int = 0, keep: int = 0, keep_from: int = 0,
               keep_live: bool = False) -> dict:
    if not os.path.isdir(attempt_dir):
        return {"state": "lost", "reason": "no files for this rank on the node", "missing": True,
                "processes": processes}
    report = {**_files_state(attempt_dir, processes), "processes": processes}
    if report["state"] == "running":
        report["log_idle"] = log_idle(attempt_dir)
    if report["state"] in ("failed", "lost"):
        lines = log_copy(attempt_dir, LOG_END_BYTES, 0, running=False).get("log_end", "").splitlines()
        cause = failure_cause(attempt_dir, lines)
        if cause:
            report["cause"] = cause
            lines = lines[:launcher_traceback(lines)]  # the workers' last lines, not torchrun's summary
        if tail:
            report["tail"] = lines[-tail:]
    running = report["state"] in ("running", "starting")
    if keep and (keep_live or not running):
        report.update(log_copy(attempt_dir, keep, keep_from, running))
    return report


def _files_state(attempt_dir: str, processes: int) -> dict:
    exit_code = read_fields(os.path.join(attempt_dir, "exit_code"))
    pid_fields = read_fields(os.path.join(attempt_dir, "pid")) or []
    stopped = os.path.exists(os.path.join(attempt_dir, "stopped"))
    report = {
        "pid": int(pid_fields[0]) if pid_fields else None,
        "pid_start": pid_fields[1] if len(pid_fields) > 1 else None,
        "started": float(pid_fields[2]) if len(pid_fields) > 2 else None,
    }
    if exit_code:
        code = int(exit_code[0])
        state = "succeeded" if code == 0 else ("stopped" if stopped else "failed")
        leftovers = read_fields(os.path.join(attempt_dir, "leftovers")) or []
        return {**report, "state": state, "exit_code": code, "ended": float(exit_code[1]),
                "leftovers": int(leftovers[0]) if leftovers and leftovers[0].isdigit() else None}
    if not pid_fields:
        return {**report, "state": "starting"}
    container = read_fields(os.path.join(attempt_dir, "container"))
    if container:
        engine_state = container_state(*container)
        if engine_state is not None:
            return {**report, **engine_state}
    pid, ticks = pid_fields[0], pid_fields[1]
    leader_ticks = tsubmit_procs.start_ticks(pid)  # None: gone, or a zombie
    if leader_ticks == ticks or (leader_ticks is None and (processes or tsubmit_procs.group_alive(pid))):
        return {**report, "state": "running"}
    if stopped:
        return {**report, "state": "stopped", "ended": os.path.getmtime(os.path.join(attempt_dir, "stopped"))}
    return {**report, "state": "lost", "reason": "the process ended without an exit code"}


def main() -> None:
    root = os.path.expanduser(sys.argv[1])
    wanted = json.loads(sys.argv[2])
    marked = {marker: len(pids) for marker, pids in tsubmit_procs.marked_processes().items()}
    print(json.dumps({
        item["key"]: rank_state(os.path.join(root, item["dir"]), marked.get(item["marker"], 0),
                                item.get("tail", 0), item.get("keep", 0), item.get("keep_from", 0),
                                item.get("keep_live", False))
        for item in wanted
    }))


main()
