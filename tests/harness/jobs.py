"""What tests read of a tsubmit job: its id in the command's output, its rank
logs where the node keeps them, and its processes, counted from /proc by the
job's marker in their environment, never from tsubmit's word."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .waiting import eventually

if TYPE_CHECKING:
    from .sshd import Node

# The tsubmit command as tests run it: the interpreter of this test run, so the checkout's code.
TSUBMIT = [sys.executable, "-m", "tsubmit"]
# `job ID (NAME) running ...`, `launch of job ID failed; ...`: ids are 10 hex digits.
JOB_NAMED = re.compile(r"\bjob ([0-9a-f]{10})\b")


def job_id_of(output) -> str:
    """The id of the job named first in OUTPUT: a command's result (stdout, then stderr) or a text."""
    text = output if isinstance(output, str) else output.stdout + output.stderr
    found = JOB_NAMED.search(text)
    assert found, f"no job id in:\n{text}"
    return found.group(1)


def start(cli, *args: str) -> str:
    """`tsubmit run ARGS`, which must succeed; the id of the job it started."""
    return job_id_of(cli.ok("run", *args))


def distributed(cli, cluster: str, workdir: Path, *command: str, extra=()) -> str:
    """Start COMMAND on CLUSTER under the distributed executor (EXTRA: more run options); its id."""
    return start(cli, "-c", cluster, "--executor", "distributed", *extra, "--workdir", str(workdir),
                 "--", *command)


def attempt_dir(node: Node, job: str, rank: int = 0, attempt: int = 1) -> Path:
    """Where NODE keeps attempt ATTEMPT of rank RANK of JOB: its log, pid and exit code."""
    return node.remote_root / job / f"rank-{rank}" / f"attempt-{attempt}"


def log_of(node: Node, job: str, rank: int, attempt: int = 1) -> str:
    """What rank RANK of JOB wrote so far in attempt ATTEMPT, read where NODE keeps it ('' if nothing)."""
    path = attempt_dir(node, job, rank, attempt) / "output.log"
    return path.read_text() if path.exists() else ""


def exit_code(attempt: Path, timeout: float = 120) -> int:
    """The exit code of the rank's ATTEMPT (an attempt_dir) once it ended; its log when it did not in time."""
    log = attempt / "output.log"
    eventually(lambda: (attempt / "exit_code").exists(), timeout=timeout, interval=0.5,
               message=f"{attempt} to end (its exit_code)",
               detail=lambda: f"its log:\n{log.read_text() if log.exists() else '-'}")
    return int((attempt / "exit_code").read_text().split()[0])


def job_processes(job: str) -> list[str]:
    """"PID COMMAND-LINE" of the live processes whose environment names JOB: the rank
    marker launch.sh exports, or TSUBMIT_JOB_ID that every command sees."""
    wanted = (f"TSUBMIT_RANK_MARKER={job}.".encode(), f"TSUBMIT_JOB_ID={job}\0".encode())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes() + b"\0"
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if any(marker in environ for marker in wanted):
            found.append(f"{pid} {cmdline}")
    return found



def attempt_runs(cli, job: str, attempt: int, hosts: list[str]) -> dict | None:
    """JOB's record once ATTEMPT runs on HOSTS, rank for rank, every rank running; else None."""
    record = cli.job(job)
    return record if (record["attempt"] == attempt and [r["host"] for r in record["ranks"]] == hosts
                      and all(r["state"] == "running" for r in record["ranks"])) else None


def watch_until(cli, condition, what: str, timeout: float = 300):
    """`tsubmit watch --once` passes, as cron runs them, until CONDITION holds; its value."""
    passes = []

    def after_a_pass():
        passes[:] = [cli("watch", "--once")]
        return condition()

    return eventually(after_a_pass, timeout=timeout, interval=0, message=what,
                      detail=lambda: f"the last pass:\n{passes[-1].output}")


def stop_and_count(cli, job: str) -> None:
    """Stop JOB; nothing of it may be left running (counted from /proc)."""
    cli.ok("stop", job, "--grace", "5")
    assert job_processes(job) == []
