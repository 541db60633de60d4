"""Is the process tsubmit recorded still the one running? One answer for every
node-side script.

Plain Python (standard library only), shipped beside the scripts that import it
by tsubmit.cluster.run_script's `files:` (the status role's rank_status.py, the
optuna_store role's scripts); this role (node_lib) has no tasks, only files
other roles ship.

A pid file holds "PID STARTTICKS EPOCH": STARTTICKS is field 22 of
/proc/PID/stat when the process started. A recorded process counts as alive
only while that pid runs with the same start time, so a pid the OS gave to
another process is never taken for ours. A zombie counts as dead: it has
exited, only its parent has not collected its exit status yet.
"""

from __future__ import annotations

import os
import time


def proc_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): [state, ppid, pgrp, ...]; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int | str) -> str | None:
    """PID's start time in clock ticks; None when it is gone or a zombie."""
    fields = proc_fields(pid)
    if not fields or fields[0] == "Z":
        return None
    return fields[19]


def group_alive(pgid: int | str) -> bool:
    """Any live (not zombie) process left in process group PGID: a rank's workers may
    outlive the shell that started them."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_fields(entry)
            if fields and fields[0] != "Z" and fields[2] == str(pgid):
                return True
    return False


MARKER = b"TSUBMIT_RANK_MARKER="  # exported by launch.sh to everything a rank runs


def marked_processes() -> dict[str, list[int]]:
    """{marker: pids} of this user's processes carrying a rank marker (a zombie's
    environment reads empty, so it carries none)."""
    found: dict[str, list[int]] = {}
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(MARKER):
                found.setdefault(variable[len(MARKER):].decode(errors="replace"), []).append(int(entry))
                break
    return found


def pid_record(pid: int) -> str:
    """The pid file line of the running process PID, as read_pid reads it (launch.sh
    writes the same line in shell); STARTTICKS 0 when PID is already gone."""
    return f"{pid} {start_ticks(pid) or '0'} {int(time.time())}\n"


def read_pid(path: str) -> tuple[int, str] | None:
    """(PID, STARTTICKS) of a pid file; None when it is missing or malformed."""
    try:
        with open(path) as handle:
            fields = handle.read().split()
    except OSError:
        return None
    if len(fields) < 2 or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1]


def is_ours(record: tuple[int, str] | None) -> bool:
    """The recorded process still runs: the same pid with the same start time."""
    return record is not None and start_ticks(record[0]) == record[1]
