"""Collect what a post-mortem of ranks on this node needs; print one JSON object.

Usage: postmortem.py REMOTE_ROOT JSON PY_SPY
JSON is a list of {"key", "dir", "marker", "pid_file", "lines"}: an attempt of
a rank as tsubmit lays it out (tsubmit/model/layout.py), its folder relative to
REMOTE_ROOT, its TSUBMIT_RANK_MARKER value and how many of its log's last lines
are wanted. PY_SPY is the host's tsubmit_py_spy ("" when unset: py-spy beside
this Python, else on PATH).

A rank's processes are those of this user carrying its marker
(tsubmit_procs.marked_processes, which rank_status.py counts), and the process its pid file records with its
descendants, whoever owns them: a process of another user cannot have its
environment read, so only the pid file finds it. For each Python process: a
`py-spy dump` where py-spy is found and may attach, else (and for every other
process) its state, wchan and /proc/PID/stack where readable. Whatever could
not be had is said in "missing", never left out silently.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys

import tsubmit_procs

PY_SPY_TIMEOUT = 30


def read(path: str, binary: bool = False):
    try:
        with open(path, "rb" if binary else "r") as handle:
            return handle.read()
    except OSError as error:
        return error


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def descendants(root: str) -> set[str]:
    children: dict[str, set[str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = tsubmit_procs.proc_fields(pid)
        if fields and fields[0] != "Z":
            children.setdefault(fields[1], set()).add(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def find_py_spy(configured: str, setup_dir: str = "") -> tuple[str | None, str | None]:
    """(py-spy's path, None) or (None, why there is none): the host's
    tsubmit_py_spy, else as the rank's PATH finds it: in the venv of the job's
    setup (SETUP_DIR/venv/bin, first on the rank's PATH), beside this Python
    (tsubmit_python), else on PATH."""
    if configured:
        if os.access(configured, os.X_OK):
            return configured, None
        return None, f"py-spy not found: tsubmit_py_spy is {configured}, which is not an executable"
    venv = os.path.join(setup_dir, "venv", "bin") if setup_dir else None
    for folder in filter(None, (venv, os.path.dirname(sys.executable))):
        if os.access(os.path.join(folder, "py-spy"), os.X_OK):
            return os.path.join(folder, "py-spy"), None
    found = shutil.which("py-spy")
    if found:
        return found, None
    in_venv = f"in {venv} (the job's --setup), " if venv else ""
    return None, (f"py-spy not found {in_venv}beside {sys.executable} nor on PATH (host variable "
                  "tsubmit_py_spy names it; `pip install py-spy` installs it, also in a --setup venv)")


def setup_dir(attempt_dir: str) -> str:
    """The folder of the rank's setup (run --setup), as run_setup.sh recorded it; "" without one."""
    recorded = read(os.path.join(attempt_dir, "setup"))
    return "" if isinstance(recorded, Exception) else os.path.expanduser(recorded.strip())


def is_python(pid: str, cmdline: list[str]) -> bool:
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        exe = ""
    first = os.path.basename(cmdline[0]) if cmdline else ""
    return exe.startswith("python") or first.startswith("python")


def process_report(pid: str, py_spy: str | None, py_spy_missing: str | None) -> dict:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        uid = None
    fields = tsubmit_procs.proc_fields(pid) or ["?"]
    raw = read(f"/proc/{pid}/cmdline", binary=True)
    words = [] if isinstance(raw, Exception) else raw.split(b"\0")
    cmdline = [word.decode(errors="replace") for word in words if word]
    report: dict = {"pid": int(pid), "user": user_name(uid) if uid is not None else "?",
                    "cmdline": " ".join(cmdline), "state": fields[0], "python": is_python(pid, cmdline),
                    "missing": []}
    wchan = read(f"/proc/{pid}/wchan")
    if isinstance(wchan, Exception):
        report["missing"].append(f"wchan: {wchan.strerror}")
    else:
        report["wchan"] = wchan.strip() or "0"
    stack = read(f"/proc/{pid}/stack")
    if isinstance(stack, Exception):
        report["missing"].append(f"kernel stack (/proc/{pid}/stack): {stack.strerror}")
    else:
        report["kernel_stack"] = stack
    if not report["python"]:
        return report
    if uid != os.getuid():
        report["missing"].append(f"Python stack: the process belongs to {report['user']}, not "
                                 f"{user_name(os.getuid())}, so py-spy may not attach to it")
    elif py_spy is None:
        report["missing"].append(f"Python stack: {py_spy_missing}")
    else:
        try:
            dumped = subprocess.run([py_spy, "dump", "--pid", pid], capture_output=True, text=True,
                                    timeout=PY_SPY_TIMEOUT)
        except subprocess.TimeoutExpired:
            report["missing"].append(f"Python stack: py-spy dump gave no answer in {PY_SPY_TIMEOUT}s")
        except OSError as error:
            report["missing"].append(f"Python stack: {py_spy} cannot run: {error.strerror}")
        else:
            if dumped.returncode == 0:
                report["py_spy"] = dumped.stdout
            else:
                why = (dumped.stderr or dumped.stdout).strip().splitlines()
                report["missing"].append("Python stack: py-spy dump failed: " + (why[-1] if why else
                                         f"exit {dumped.returncode}"))
    return report


def log_tail(path: str, lines: int) -> tuple[list[str], str | None]:
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, end - 256 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError as error:
        return [], f"log {path}: {error.strerror}"
    return text.splitlines()[-lines:] if lines else [], None


def nvidia_smi() -> tuple[str | None, str | None]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None, None  # a node without GPUs: nothing missing
    try:
        ran = subprocess.run([smi], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"nvidia-smi: {error}"
    failed = f"nvidia-smi exited with {ran.returncode}" if ran.returncode else None
    return ran.stdout + ran.stderr, failed


def main() -> None:
    root, ranks, configured = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    py_spy, _ = find_py_spy(configured)
    by_marker = tsubmit_procs.marked_processes()
    smi, smi_missing = nvidia_smi()
    report: dict = {"ranks": {}, "py_spy": py_spy, "nvidia_smi": smi,
                    "missing": [smi_missing] if smi_missing else []}
    for rank in ranks:
        folder = os.path.join(root, rank["dir"])
        lines, log_missing = log_tail(os.path.join(folder, "output.log"), rank.get("lines", 200))
        pids = {str(pid) for pid in by_marker.get(rank["marker"], ())}
        recorded = tsubmit_procs.read_pid(os.path.join(folder, "pid"))
        if tsubmit_procs.is_ours(recorded):
            pids |= {str(recorded[0])} | descendants(str(recorded[0]))
        rank_py_spy, py_spy_missing = find_py_spy(configured, setup_dir(folder))
        processes = [process_report(pid, rank_py_spy, py_spy_missing) for pid in sorted(pids, key=int)
                     if tsubmit_procs.start_ticks(pid)]
        report["ranks"][rank["key"]] = {"log": lines, "processes": processes, "py_spy": rank_py_spy,
                                        "missing": [log_missing] if log_missing else []}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
