#!/usr/bin/env python3
"""Benchmark of tsubmit's remote paths against real sshd nodes, run by hand.

Never part of CI nor a timed test: it starts up to 16 (64 with --large) sshd
nodes on loopback with the test harness and takes minutes. Run it as root
from the repository, with the project's venv:

    .venv/bin/python bench/bench_submit.py            # N = 1, 4, 16; 5 rounds
    .venv/bin/python bench/bench_submit.py --quick    # N = 1, 4; 2 rounds (smoke run)
    .venv/bin/python bench/bench_submit.py --large    # adds N = 64
    .venv/bin/python bench/bench_submit.py --torch-submit /tmp/ts-venv/bin/torch-submit

Sections (figures are medians over alternating rounds of the same run):

* submit: wall time of `tsubmit run -c CLUSTER --executor distributed -- python
  -c "import time; time.sleep(30)"` (it returns once every rank's launch script
  recorded its pid), with the SSH control masters closed first (cold) and
  right after, reusing them (warm); each round changes one small file, so the
  archive is new and shipped. Against it, a raw parallel-ssh reference: one
  ssh per node at once, the same tar.gz on stdin, unpacked into a fresh folder
  under the node's remote root, the command started detached (setsid, output
  to a file, pid printed). And the ansible-runner floor (ansible_floor.py): two
  empty round trips per node through ansible-runner, cold and warm like the
  submit. Optionally the original torch-submit (its nodes' user then has bash
  for a shell: ensure_bash_user).
* list: `tsubmit list` with 1, 10 and 50 active jobs on a 2-node cluster.
* resubmit: bytes shipped when the same tree is submitted again (the node's
  archive cache file must be left untouched: same inode and mtime).
* archive: `tsubmit.archive.pack` of a tree with a 1 GB ignored folder (a sparse
  file) against the same tree without it, and a record of what it opened.
* startup: `tsubmit --help`, `tsubmit list` with no jobs, `tsubmit run --dry-run`.

Jobs are deleted after each measurement (outside the timed part); at the end
the nodes are stopped, which also kills anything left on them, and the
temporary folders are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import pwd
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.harness import SshNodes  # noqa: E402
from tests.harness.sshd import children_map, descendants  # noqa: E402
from tsubmit import archive as archives  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "tsubmit"
TSUBMIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tsubmit"]
SLEEP = ["python", "-c", "import time; time.sleep(30)"]
LONG_SLEEP = ["python", "-c", "import time; time.sleep(3600)"]
SUBMIT_TIMEOUT = 1800
FLOOR = Path(__file__).resolve().parent / "ansible_floor.py"
SLEEPERS = r"time\.sleep\(30\)|train\.py"  # what the tools' ranks run
BASH_USER = "tsubmit-bench-bash"

# Issue 17's targets; each gets a verdict line at the end of the report.
TARGETS = {
    "n16_warm": "N=16 `tsubmit run` warm within 1.5x of raw parallel ssh",
    "n16_cold": "N=16 `tsubmit run` cold within 2.0x of raw parallel ssh",
    "n16_cpu": "N=16 controller CPU per node at most 0.15 s (cold and warm)",
    "n8_warm": "N=8 `tsubmit run` warm within 1.5x of raw parallel ssh",
    "n1_torch_submit": "N=1 `tsubmit run` warm faster than torch-submit",
    "n1_floor": "N=1 `tsubmit run` at most 0.15 s above the ansible-runner floor, cold and warm",
    "n64": "N=64 runs clean, warm within 2.0x of raw parallel ssh",
    "torch_submit": "`tsubmit run` (cold and warm) faster than torch-submit at every N",
    "list": "`list` with 50 active jobs within 1.2x of the time with 1",
    "resubmit": "resubmitting an unchanged tree ships 0 archive bytes",
    "archive": "archiving never reads a byte of an ignored folder",
    "startup": "`--help` under 0.1 s",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_mb(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------- processes


@dataclass
class Timed:
    code: int
    seconds: float
    maxrss_kib: int  # the largest single process of the tree (getrusage semantics)
    cpu_s: float  # user + system CPU of the command and its reaped descendants
    stdout: str
    stderr: str
    started: float  # time.time() at start

    def check(self, what: str) -> Timed:
        if self.code != 0:
            raise RuntimeError(f"{what} exited {self.code}:\n{self.stdout[-2000:]}\n{self.stderr[-3000:]}")
        return self


def run_timed(argv: list[str], *, env: dict, cwd: Path | None = None, timeout: float = SUBMIT_TIMEOUT,
              sampler: TreeSampler | None = None) -> Timed:
    """Wall time and peak RSS of a command and everything it waited for.

    os.wait4 returns the child's rusage, whose ru_maxrss covers the child and
    its reaped descendants (ansible-playbook, its forks, their ssh clients):
    like getrusage(RUSAGE_CHILDREN), but for this one command.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if sampler is not None:
            sampler.watch(proc.pid)
        timer = threading.Timer(timeout, lambda: _kill_quietly(proc.pid))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler is not None:
            sampler.stop()
        out.seek(0)
        err.seek(0)
        return Timed(proc.returncode, seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime,
                     out.read().decode(errors="replace"),
                     err.read().decode(errors="replace"), started)


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class TreeSampler:
    """Peak of the summed PSS of a process and its live descendants, sampled.

    PSS splits shared pages (Ansible's forks share most of theirs with the
    parent) among the processes, so the sum is the real footprint. Reading
    smaps costs CPU, so it is only used in untimed runs.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_kib = 0
        self.peak_processes = 0
        self._root: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, pid: int) -> None:
        self._root = pid
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.is_set():
            pids = [*descendants(self._root), self._root]
            total = sum(_pss_kib(pid) for pid in pids)
            if total > self.peak_kib:
                self.peak_kib, self.peak_processes = total, len(pids)
            self._done.wait(self.interval)


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: the process and its reaped descendants."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return sum(int(value) for value in fields[11:15])
    except (OSError, ValueError, IndexError):
        return 0


def node_cpu(nodes: SshNodes) -> float:
    """CPU seconds used so far by everything the nodes' sshd ever ran.

    The sum over the live processes of each listener's tree of their own and
    reaped children's time counts every process that stayed in the tree (a
    rank detached with setsid and re-parented to init leaves it; a sleeping
    rank costs nothing anyway). Take a difference around an operation.
    """
    total = 0
    children = children_map()
    for node in nodes.nodes:
        if node.process is None:
            continue
        root = node.process.pid
        total += sum(_cpu_ticks(pid) for pid in [root, *descendants(root, children)])
    return total / _TICK


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# --------------------------------------------------------------------- fixtures


def make_workdir(parent: Path) -> Path:
    """~2 MB shipped (python files, random binaries) and a 50 MB ignored folder."""
    wd = parent / "work"
    (wd / "src").mkdir(parents=True)
    (wd / "assets").mkdir()
    (wd / "data").mkdir()
    (wd / ".gitignore").write_text("data/\n*.pyc\n__pycache__/\n")
    (wd / "train.py").write_text(
        "import os\nimport time\n\nfrom src.model import build\n\n\n"
        "def main():\n    model = build()\n    print(os.environ.get('RANK'), model)\n    time.sleep(30)\n\n\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    for name in ("model", "data", "utils", "config"):
        body = "".join(f"def {name}_{i}(x):\n    return x * {i} + {len(name)}\n\n\n" for i in range(200))
        head = f'"""{name}."""\n\n\ndef build():\n    return "{name}"\n\n\n'
        (wd / "src" / f"{name}.py").write_text(head + body)
    (wd / "src" / "__init__.py").write_text("")
    for i in range(4):
        (wd / "assets" / f"weights-{i}.bin").write_bytes(os.urandom(480 * 1024))
    for i in range(50):
        (wd / "data" / f"shard-{i:02d}.bin").write_bytes(os.urandom(1024 * 1024))
    return wd


def tree_size(wd: Path) -> tuple[int, int]:
    """Bytes and files that pack() would include."""
    total = files = 0
    for rel in archives.included_paths(wd):
        path = wd / rel
        if not rel.endswith("/") and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            files += 1
    return total, files


def write_cluster(home: Path, name: str, nodes: SshNodes, members) -> None:
    """Like tests/conftest.py's Cli.write_cluster."""
    hosts = {node.name: nodes.host_vars(node) for node in members}
    path = home / "config" / "clusters" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))


def new_home(bench_dir: Path, label: str) -> Path:
    # Short: SSH control sockets live under it (see tsubmit.ansible_env.control_dir).
    home = Path(tempfile.mkdtemp(prefix=f"tsb-{label}-", dir="/tmp"))
    return home


def tsubmit_env(home: Path) -> dict:
    # The tsubmit measured is the checkout this file lives in, whatever the
    # venv's editable install points to (run the bench from a snapshot of a
    # commit while others edit the working tree).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "TSUBMIT_HOME": str(home), "NO_COLOR": "1", "PYTHONPATH": path}


def close_masters(home: Path) -> int:
    """Ask every SSH control master of this TSUBMIT_HOME to exit (cold start)."""
    closed = 0
    for sock in glob.glob(str(home / "state" / "cp" / "*")):
        result = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "bench-master"],
            capture_output=True, text=True, check=False)
        closed += result.returncode == 0
    # The master removes its socket on the way out.
    deadline = time.monotonic() + 5
    while glob.glob(str(home / "state" / "cp" / "*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    return closed


def run_dirs(home: Path, kind: str) -> set[str]:
    return set(glob.glob(str(home / "state" / "runs" / f"*-{kind}-*")))


JOB_LINE = re.compile(r"^job (\S+) \(", re.M)


def job_id_of(result: Timed) -> str:
    match = JOB_LINE.search(result.stdout)
    if not match:
        raise RuntimeError(f"no job id in tsubmit's output:\n{result.stdout}\n{result.stderr[-2000:]}")
    return match.group(1)


def delete_jobs(env: dict, job_ids: list[str]) -> None:
    if job_ids:
        result = subprocess.run([*TSUBMIT, "delete", *job_ids, "--yes"], env=env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=SUBMIT_TIMEOUT, check=False)
        if result.returncode != 0:
            log(f"warning: tsubmit delete exited {result.returncode}: {result.stderr.strip()[-500:]}")


def kill_node_processes(nodes: SshNodes, members, pattern: str) -> int:
    """SIGKILL the processes of these nodes whose command line matches (by pid)."""
    regex = re.compile(pattern)
    killed = 0
    for node in members:
        for pid, cmd in nodes._node_processes(node):  # the repo's own harness
            if regex.search(cmd):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
    return killed


# --------------------------------------------------------------------- raw reference

RAW_SCRIPT = """set -e
d={root}/raw-{tag}
mkdir -p "$d/workdir"
tar -xzf - -C "$d/workdir"
cd "$d/workdir"
setsid {python} -c 'import time; time.sleep(30)' >"$d/output.log" 2>&1 </dev/null &
echo $!
"""


def raw_submit(nodes: SshNodes, members, archive_bytes: bytes) -> tuple[float, str, dict]:
    """One ssh per node, all at once; returns (seconds, tag, node name -> pid)."""
    tag = uuid.uuid4().hex[:10]

    def one(node):
        script = RAW_SCRIPT.format(root=node.remote_root, tag=tag, python=nodes.python)
        return subprocess.run([*nodes.ssh_args(node), script], input=archive_bytes, capture_output=True,
                              timeout=300, check=False)

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        start = time.perf_counter()
        results = list(pool.map(one, members))
        seconds = time.perf_counter() - start
    pids = {}
    for node, result in zip(members, results, strict=True):
        if result.returncode != 0:
            raise RuntimeError(f"raw ssh to {node.name} exited {result.returncode}: {result.stderr.decode()}")
        pids[node.name] = int(result.stdout.split()[-1])
    return seconds, tag, pids


def raw_cleanup(nodes: SshNodes, members, tag: str, pids: dict) -> None:
    def one(node):
        # dash's kill takes no "--": a negative pid is the process group (setsid made it one).
        command = f"kill -KILL -{pids[node.name]} 2>/dev/null; rm -rf {node.remote_root}/raw-{tag}"
        nodes.ssh(node, command, check=False)

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        list(pool.map(one, members))


# --------------------------------------------------------------------- torch-submit


def ensure_bash_user() -> str:
    """The nodes' user when torch-submit is compared: every command torch-submit
    starts begins with `source ~/.profile`, which the harness's light user (shell
    /bin/sh, dash) does not know. This user's shell is bash with Debian's skeleton
    rc files, which return at once in a non-interactive shell; every tool of the
    comparison runs against the same nodes as this user."""
    try:
        pwd.getpwnam(BASH_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                        f"/var/lib/{BASH_USER}", "--shell", "/bin/bash", BASH_USER], check=True)
    return BASH_USER


def torch_submit_setup(path: str, bench_dir: Path, nodes: SshNodes, sizes: list[int]) -> dict:
    """A HOME for torch-submit with one cluster per size; its config lives under ~/.cache."""
    home = bench_dir / "torch-submit-home"
    config = home / ".cache" / "torch-submit" / "config.yaml"
    config.parent.mkdir(parents=True)

    def node_entry(node):
        return {"public_ip": node.address, "private_ip": None, "num_gpus": 1, "nproc": 1,
                "ssh_user": node.user, "ssh_pub_key_path": str(nodes.identity_file),
                "ssh_port": node.port}

    clusters = {
        f"c{n}": {"head_node": node_entry(nodes.nodes[0]),
                  "worker_nodes": [node_entry(node) for node in nodes.nodes[1:n]]}
        for n in sizes
    }
    config.write_text(yaml.safe_dump({"clusters": clusters, "databases": {}}))
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(nodes.known_hosts, home / ".ssh" / "known_hosts")
    env = {**os.environ, "HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("VIRTUAL_ENV", None)
    # Its runtime environment prefixes the node's torchrun line: the nodes' python
    # and torchrun come first on PATH, as tsubmit_python does for tsubmit.
    runtime_env = home / "runtime_env.yaml"
    runtime_env.write_text(yaml.safe_dump({"PATH": f"{Path(nodes.python).parent}:/usr/bin:/bin"}))
    return {"path": path, "env": env, "home": home, "runtime_env": runtime_env}


def torch_submit_run(ts: dict, n: int, wd: Path) -> Timed:
    # torchrun is its default executor; its `distributed` one indexes the
    # worker list by rank and fails on the last node. It joins the command's
    # words with spaces, unquoted, so the rank is train.py (it sleeps 30 s too)
    # rather than `python -c "..."`.
    return run_timed([ts["path"], "job", "submit", "--cluster", f"c{n}", "--working-dir", str(wd),
                      "--executor", "torchrun", "--runtime-env", str(ts["runtime_env"]), "--",
                      "python", "train.py"], env=ts["env"], cwd=wd)


# --------------------------------------------------------------------- runner artifacts


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


def describe_run(summary: dict, result: Timed, top: int = 12) -> str:
    start, end = summary["playbook_start"], summary["playbook_end"]
    lines = []
    if start and end:
        before = start - result.started
        inside = end - start
        after = result.started + result.seconds - end
        lines.append(f"wall {result.seconds:.2f} s = before the playbook's first event {before:.2f} s "
                     f"(python, archive, job store, runner and ansible-playbook start-up) + playbook "
                     f"{inside:.2f} s + after {after:.2f} s")
    rows = sorted(summary["tasks"], key=lambda row: -row["span"])[:top]
    lines.append(table(
        ["TASK", "SPAN s", "MEDIAN/HOST s", "MAX/HOST s", "OUTCOMES"],
        [[row["task"][:72], f"{row['span']:.2f}", f"{row['median_host']:.2f}", f"{row['max_host']:.2f}",
          ",".join(f"{k}={v}" for k, v in row["outcomes"].items())] for row in rows],
    ))
    total = sum(row["span"] for row in summary["tasks"])
    lines.append(f"sum of task spans {total:.2f} s over {len(summary['tasks'])} tasks")
    return "\n".join(lines)


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


# --------------------------------------------------------------------- sections


@dataclass
class Context:
    args: argparse.Namespace
    nodes: SshNodes
    bench_dir: Path
    wd: Path
    homes: list[Path] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    cleanup: list = field(default_factory=list)


def bump_tree(wd: Path) -> None:
    """A new archive: one small file changes (untimed), like an edit between submits."""
    (wd / "src" / "revision.py").write_text(f"REVISION = {uuid.uuid4().hex!r}\n")


def section_submit(ctx: Context, sizes: list[int]) -> None:
    args, nodes, wd = ctx.args, ctx.nodes, ctx.wd
    home = new_home(ctx.bench_dir, "sub")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    for n in sizes:
        write_cluster(home, f"c{n}", nodes, nodes.nodes[:n])
    ts = None
    if args.torch_submit:
        if Path(args.torch_submit).exists():
            ts = torch_submit_setup(args.torch_submit, ctx.bench_dir, nodes, sizes)
        else:
            log(f"--torch-submit {args.torch_submit} does not exist: torch-submit skipped")
    pack_dir = ctx.bench_dir / "raw-archives"
    out = ctx.results.setdefault("submit", {})
    for n in sizes:
        members = nodes.nodes[:n]
        figures = {"raw": [], "cold": [], "warm": [], "floor_cold": [], "floor_warm": [],
                   "raw_node_cpu": [], "raw_ctl_cpu": [],
                   "cold_node_cpu": [], "cold_ctl_cpu": [], "warm_node_cpu": [], "warm_ctl_cpu": [],
                   "torch_submit": [], "rss_kib": [], "ts_started": [],
                   "ts_rss_kib": [], "ts_codes": []}
        last_runs = {}
        for round_index in range(args.rounds):
            steps = ["raw", "tsubmit"] + (["torch_submit"] if ts else [])
            shift = round_index % len(steps)
            steps = steps[shift:] + steps[:shift]
            for step in steps:
                bump_tree(wd)
                if step == "raw":
                    archive = archives.pack(wd, pack_dir)
                    cpu_before, usage_before = node_cpu(nodes), resource.getrusage(resource.RUSAGE_CHILDREN)
                    seconds, tag, pids = raw_submit(nodes, members, archive.path.read_bytes())
                    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                    figures["raw"].append(seconds)
                    figures["raw_node_cpu"].append(node_cpu(nodes) - cpu_before)
                    figures["raw_ctl_cpu"].append(usage.ru_utime + usage.ru_stime
                                                  - usage_before.ru_utime - usage_before.ru_stime)
                    raw_cleanup(nodes, members, tag, pids)
                    log(f"N={n} round {round_index + 1}: raw ssh {seconds:.2f} s ({archive.size} B archive)")
                elif step == "tsubmit":
                    for variant in ("cold", "warm"):
                        if variant == "cold":
                            close_masters(home)
                        else:
                            bump_tree(wd)
                        before = run_dirs(home, "submit")
                        cpu_before = node_cpu(nodes)
                        result = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--",
                                            *SLEEP], env=env, cwd=wd).check(f"tsubmit run (N={n})")
                        figures[f"{variant}_node_cpu"].append(node_cpu(nodes) - cpu_before)
                        figures[f"{variant}_ctl_cpu"].append(result.cpu_s)
                        new = sorted(run_dirs(home, "submit") - before)
                        last_runs[variant] = (new[-1], result)
                        figures[variant].append(result.seconds)
                        figures["rss_kib"].append(result.maxrss_kib)
                        job = job_id_of(result)
                        log(f"N={n} round {round_index + 1}: tsubmit run ({variant}) {result.seconds:.2f} s, "
                            f"peak RSS {result.maxrss_kib / 1024:.0f} MiB")
                        delete_jobs(env, [job])
                    inventory = home / "config" / "clusters" / f"c{n}.yml"
                    for variant in ("cold", "warm"):
                        if variant == "cold":
                            close_masters(home)
                        result = run_timed([sys.executable, str(FLOOR), str(inventory), str(n)],
                                           env=env).check(f"ansible floor (N={n})")
                        figures[f"floor_{variant}"].append(result.seconds)
                        log(f"N={n} round {round_index + 1}: ansible-runner floor ({variant}) "
                            f"{result.seconds:.2f} s")
                else:
                    ts_dirs_before = set(glob.glob("/tmp/torch_submit_job_*"))
                    kill_node_processes(nodes, members, SLEEPERS)  # leftovers of any tool
                    result = torch_submit_run(ts, n, wd)
                    time.sleep(0.5)  # let the last node's detached command start
                    started = sum(bool(nodes.processes_of(node, r"train\.py")) for node in members)
                    figures["torch_submit"].append(result.seconds)
                    figures["ts_started"].append(started)
                    figures["ts_rss_kib"].append(result.maxrss_kib)
                    figures["ts_codes"].append(result.code)
                    log(f"N={n} round {round_index + 1}: torch-submit {result.seconds:.2f} s, exit "
                        f"{result.code}, {started}/{n} nodes running the command")
                    if result.code != 0:
                        # Its errors are rich tracebacks in boxes; the plain lines say what failed.
                        plain = [line for line in (result.stdout + result.stderr).splitlines()
                                 if line.strip() and line[0] not in "│╭╰"]
                        log("torch-submit said:\n  " + "\n  ".join(plain[-12:]))
                    kill_node_processes(nodes, members, SLEEPERS + "|torch_submit_job_")
                    # Its job folder is /tmp/torch_submit_job_<uuid> on every node (one
                    # filesystem here): remove the ones this run made.
                    for path in set(glob.glob("/tmp/torch_submit_job_*")) - ts_dirs_before:
                        shutil.rmtree(path, ignore_errors=True)
        # Peak memory of the whole process tree (PSS), in one untimed warm run.
        bump_tree(wd)
        sampler = TreeSampler()
        result = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                           env=env, cwd=wd, sampler=sampler).check("tsubmit run (sampled)")
        delete_jobs(env, [job_id_of(result)])
        entry = {
            **{key: figures[key] for key in ("raw", "cold", "warm", "floor_cold", "floor_warm")},
            **{f"{key}_median": median(figures[key])
               for key in ("raw", "cold", "warm", "floor_cold", "floor_warm")},
            "cpu": {key: median(figures[key]) for key in ("raw_ctl_cpu", "raw_node_cpu", "cold_ctl_cpu",
                                                         "cold_node_cpu", "warm_ctl_cpu", "warm_node_cpu")},
            "loadavg": loadavg(),
            "rss_max_kib": max(figures["rss_kib"]), "tree_pss_peak_kib": sampler.peak_kib,
            "tree_pss_processes": sampler.peak_processes,
            "runs": {variant: task_summary(run_dir) for variant, (run_dir, _) in last_runs.items()},
            "run_walls": {variant: result.seconds for variant, (_, result) in last_runs.items()},
            "run_started": {variant: result.started for variant, (_, result) in last_runs.items()},
        }
        if ts:
            entry.update(torch_submit=figures["torch_submit"],
                         torch_submit_median=median(figures["torch_submit"]),
                         torch_submit_started=figures["ts_started"], torch_submit_codes=figures["ts_codes"],
                         torch_submit_rss_max_kib=max(figures["ts_rss_kib"]))
        out[n] = entry
        if n == max(sizes):
            for variant, (run_dir, result) in last_runs.items():
                entry.setdefault("where", {})[variant] = describe_run(task_summary(run_dir), result)
    if args.round_trips:
        bump_tree(wd)
        trips = count_round_trips(home, env, f"c{sizes[0]}", wd)
        delete_jobs(env, [trips["job"]])
        ctx.results["round_trips"] = trips


def section_resubmit(ctx: Context, n: int) -> None:
    nodes, wd = ctx.nodes, ctx.wd
    home = new_home(ctx.bench_dir, "rs")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    members = nodes.nodes[:n]
    write_cluster(home, f"c{n}", nodes, members)
    bump_tree(wd)
    digest = archives.pack(wd, ctx.bench_dir / "raw-archives").digest

    def cache_state():
        state = {}
        for node in members:
            path = node.remote_root / ".archives" / f"{digest}.tar.gz"
            st = path.stat()
            state[node.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return state

    jobs = []
    first = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                      env=env, cwd=wd).check("first submit")
    jobs.append(job_id_of(first))
    after_first = cache_state()
    before = run_dirs(home, "submit")
    second = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                       env=env, cwd=wd).check("resubmit")
    jobs.append(job_id_of(second))
    after_second = cache_state()
    probes = probe_reports(sorted(run_dirs(home, "submit") - before)[-1])
    shipped = sum(after_second[name][2] for name in after_first
                  if after_first[name][:2] != after_second[name][:2])
    delete_jobs(env, jobs)
    ctx.results["resubmit"] = {
        "nodes": n, "archive_size": next(iter(after_first.values()))[2],
        "first_bytes": sum(state[2] for state in after_first.values()),
        "resubmit_bytes": shipped,
        "rewritten_nodes": sum(after_first[name][:2] != after_second[name][:2] for name in after_first),
        # What each node's probe said: the launch role sends the archive only to
        # nodes that hold neither it nor the unpacked tree.
        "sent_to": sum(not (probe["archive_present"] or probe["tree_present"]) for probe in probes),
        "first_seconds": first.seconds, "resubmit_seconds": second.seconds,
    }
    log(f"resubmit: {shipped} B shipped on resubmit (first submit: "
        f"{ctx.results['resubmit']['first_bytes']} B), archive sent to {ctx.results['resubmit']['sent_to']} "
        f"node(s) by the probes' account")


def section_list(ctx: Context, counts: list[int]) -> None:
    args, nodes, wd = ctx.args, ctx.nodes, ctx.wd
    home = new_home(ctx.bench_dir, "ls")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    members = nodes.nodes[:2]
    write_cluster(home, "c2", nodes, members)
    bump_tree(wd)
    active = 0
    out = ctx.results.setdefault("list", {})
    try:
        for count in counts:
            while active < count:
                run_timed([*TSUBMIT, "run", "-c", "c2", "--executor", "distributed", "--", *LONG_SLEEP],
                          env=env, cwd=wd).check("submit for list")
                active += 1
            log(f"list: {active} active jobs submitted")
            seconds, rss, cpu = [], [], []
            for _ in range(args.rounds):
                result = run_timed([*TSUBMIT, "list"], env=env).check("tsubmit list")
                running = sum(" running " in line for line in result.stdout.splitlines())
                if running != count:
                    raise RuntimeError(f"tsubmit list shows {running} running jobs, expected {count}:\n"
                                       f"{result.stdout}")
                seconds.append(result.seconds)
                rss.append(result.maxrss_kib)
                cpu.append(result.cpu_s)
            before = run_dirs(home, "status")
            result = run_timed([*TSUBMIT, "list"], env=env).check("tsubmit list")
            status_runs = sorted(run_dirs(home, "status") - before)
            out[count] = {"seconds": seconds, "median": median(seconds), "rss_max_kib": max(rss),
                          "cpu_median": median(cpu),
                          "status_runs": len(status_runs),
                          "where": describe_run(task_summary(status_runs[-1]), result) if status_runs else ""}
            log(f"list with {count} active jobs: {median(seconds):.2f} s")
    finally:
        # 50 deletes are 50 playbook runs; the jobs are stopped here by pid, and
        # stopping the nodes removes their folders.
        killed = kill_node_processes(nodes, members, r"time\.sleep\(3600\)")
        log(f"list: stopped {killed} processes of the list jobs")


def section_archive(ctx: Context) -> None:
    args = ctx.args
    base = Path(tempfile.mkdtemp(prefix="tsb-arch-", dir="/tmp"))
    ctx.cleanup.append(base)
    with_big, without = base / "with-ignored", base / "without"
    for tree in (with_big, without):
        shutil.copytree(ctx.wd, tree, ignore=shutil.ignore_patterns("data"))
    (with_big / ".gitignore").write_text((with_big / ".gitignore").read_text() + "big/\n")
    (without / ".gitignore").write_text((without / ".gitignore").read_text() + "big/\n")
    (with_big / "big" / "nested").mkdir(parents=True)
    subprocess.run(["truncate", "-s", "1G", str(with_big / "big" / "blob.bin")], check=True)
    subprocess.run(["truncate", "-s", "1M", str(with_big / "big" / "nested" / "part.bin")], check=True)
    size = (with_big / "big" / "blob.bin").stat().st_size

    def pack_once(tree: Path) -> float:
        dest = Path(tempfile.mkdtemp(prefix="dest-", dir=base))
        start = time.perf_counter()
        archives.pack(tree, dest)
        seconds = time.perf_counter() - start
        shutil.rmtree(dest)
        return seconds

    times = {"with": [], "without": []}
    for round_index in range(max(args.rounds, 3)):
        order = ["with", "without"] if round_index % 2 == 0 else ["without", "with"]
        for which in order:
            times[which].append(pack_once(with_big if which == "with" else without))

    # What pack() touches under the ignored folder: every file it opens goes
    # through archive._open_file, every folder it lists through os.scandir.
    opened, listed = [], []
    big = str(with_big / "big")
    real_open, real_scandir = archives._open_file, os.scandir

    def spy_open(path):
        opened.append(str(path))
        return real_open(path)

    def spy_scandir(path="."):
        listed.append(str(path))
        return real_scandir(path)

    archives._open_file, os.scandir = spy_open, spy_scandir
    try:
        dest = Path(tempfile.mkdtemp(prefix="dest-", dir=base))
        packed = archives.pack(with_big, dest)
    finally:
        archives._open_file, os.scandir = real_open, real_scandir
    with tarfile_names(packed.path) as names:
        in_archive = [name for name in names if name == "big" or name.startswith("big/")]
    touched_files = [p for p in opened if p == big or p.startswith(big + "/")]
    touched_dirs = [p for p in listed if p == big or p.startswith(big + "/")]

    # What reading it would have cost: hashing the sparse file once.
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(with_big / "big" / "blob.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    read_cost = time.perf_counter() - start

    ctx.results["archive"] = {
        "ignored_bytes": size, "with": times["with"], "without": times["without"],
        "with_median": median(times["with"]), "without_median": median(times["without"]),
        "files_opened_total": len(opened), "dirs_listed_total": len(listed),
        "files_opened_in_ignored": len(touched_files), "dirs_listed_in_ignored": len(touched_dirs),
        "entries_in_archive_from_ignored": len(in_archive), "hash_ignored_seconds": read_cost,
    }
    log(f"archive: with 1 GB ignored {median(times['with']):.3f} s, "
        f"without {median(times['without']):.3f} s; "
        f"opened {len(touched_files)} files / listed {len(touched_dirs)} folders under it")


@contextlib.contextmanager
def tarfile_names(path: Path):
    import tarfile

    with tarfile.open(path) as tar:
        yield tar.getnames()


def section_startup(ctx: Context, dry_run_cluster: str | None) -> None:
    rounds = max(ctx.args.rounds, 5)
    empty = new_home(ctx.bench_dir, "empty")
    ctx.homes.append(empty)
    env = tsubmit_env(empty)
    figures: dict[str, list[float]] = {"help": [], "list_empty": [], "dry_run": []}
    sub_home = ctx.homes[0] if ctx.homes else None
    for _ in range(rounds):
        figures["help"].append(run_timed([*TSUBMIT, "--help"], env=env).check("tsubmit --help").seconds)
        figures["list_empty"].append(run_timed([*TSUBMIT, "list"], env=env).check("tsubmit list").seconds)
        if dry_run_cluster and sub_home:
            figures["dry_run"].append(run_timed(
                [*TSUBMIT, "run", "-c", dry_run_cluster, "--dry-run", "--executor", "distributed", "--",
                 *SLEEP],
                env=tsubmit_env(sub_home), cwd=ctx.wd).check("tsubmit run --dry-run").seconds)
    # The interpreter alone, for scale.
    python = [run_timed([sys.executable, "-c", "pass"], env=env).seconds for _ in range(rounds)]
    ctx.results["startup"] = {
        **{key: {"seconds": values, "median": median(values)} for key, values in figures.items() if values},
        "python": {"seconds": python, "median": median(python)},
        "dry_run_cluster": dry_run_cluster,
    }
    log(f"startup: --help {median(figures['help']):.3f} s, empty list {median(figures['list_empty']):.3f} s")


# --------------------------------------------------------------------- report


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def report(ctx: Context, sizes: list[int]) -> str:
    results = ctx.results
    lines = [f"# tsubmit benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
             f"rounds {ctx.args.rounds}, medians",
             f"tsubmit from {REPO}" + (f" ({ctx.args.label})" if ctx.args.label else "")]
    size, files = tree_size(ctx.wd)
    lines.append(f"working dir: {size / 1e6:.1f} MB in {files} files shipped, 50 MB ignored (data/)")
    lines.append(f"load average at start {results.get('loadavg_start', '?')}, at the end {loadavg()} "
                 "(other work on the machine slows every figure alike; the rounds alternate)")
    verdicts = {}

    submit = results.get("submit", {})
    if submit:
        lines += ["", "## tsubmit run until every rank started (s)"]
        headers = ["N", "raw ssh", "tsubmit cold", "tsubmit warm", "cold/raw", "warm/raw",
                   "ctl CPU/node cold / warm", "floor cold", "floor warm", "floor/raw", "peak RSS MiB",
                   "tree PSS MiB"]
        if any("torch_submit_median" in entry for entry in submit.values()):
            headers += ["torch-submit", "ranks started"]
        rows = []
        for n, entry in submit.items():
            raw = entry["raw_median"]
            row = [n, fmt_s(raw), fmt_s(entry["cold_median"]), fmt_s(entry["warm_median"]),
                   f"{entry['cold_median'] / raw:.2f}x", f"{entry['warm_median'] / raw:.2f}x",
                   f"{cpu_per_node(entry, n, 'cold'):.3f} / {cpu_per_node(entry, n, 'warm'):.3f}",
                   fmt_s(entry["floor_cold_median"]), fmt_s(entry["floor_warm_median"]),
                   f"{entry['floor_cold_median'] / raw:.1f}x / {entry['floor_warm_median'] / raw:.1f}x",
                   fmt_mb(entry["rss_max_kib"]), fmt_mb(entry["tree_pss_peak_kib"])]
            if "torch_submit_median" in entry:
                started, codes = entry["torch_submit_started"], entry["torch_submit_codes"]
                figure = fmt_s(entry["torch_submit_median"])
                if min(started) < n or any(codes):
                    figure += f" (exit {max(codes, key=abs)})"
                row += [figure, f"{min(started)}-{max(started)}/{n}"]
            elif len(headers) > len(row):
                row += ["-", "-"]
            rows.append(row)
        lines.append(table(headers, rows))
        lines.append("floor: ansible_floor.py, two `raw: true` tasks per node through ansible-runner, with "
                     "the control masters closed first (cold) and reused (warm): the least any submit of two "
                     "round trips built this way costs")
        lines += ["", "CPU seconds per submit, controller (the command's process tree) / nodes (every sshd "
                  "session and what it ran)"]
        rows = []
        for n, entry in submit.items():
            cpu = entry["cpu"]
            rows.append([n] + [f"{cpu[f'{v}_ctl_cpu']:.2f} / {cpu[f'{v}_node_cpu']:.2f}"
                               for v in ("raw", "cold", "warm")] + [entry["loadavg"]])
        lines.append(table(["N", "raw ssh", "tsubmit cold", "tsubmit warm", "load avg after"], rows))
        lines.append("ctl CPU/node: the controller's CPU seconds of one submit divided by N (target at N=16: "
                     "at most 0.15 s)")
        verdicts.update(submit_verdicts(submit))
        compared = {n: entry for n, entry in submit.items() if "torch_submit_median" in entry}
        if compared:
            slower = [n for n, entry in compared.items()
                      if max(entry["cold_median"], entry["warm_median"]) >= entry["torch_submit_median"]]
            verdicts["torch_submit"] = (not slower, "slower or equal at N=" + ",".join(map(str, slower))
                                        if slower else f"faster at N={','.join(map(str, compared))}")
        else:
            verdicts["torch_submit"] = (None, "no --torch-submit")
        for n, entry in submit.items():
            for variant, text in entry.get("where", {}).items():
                lines += ["", f"### where the time goes: N={n}, {variant} (last round)", text]

    listing = results.get("list", {})
    if listing:
        lines += ["", "## tsubmit list with active jobs on 2 nodes (s)"]
        rows = [[count, fmt_s(entry["median"]), f"{entry['median'] / listing[min(listing)]['median']:.2f}x",
                 entry["status_runs"], fmt_mb(entry["rss_max_kib"]), fmt_s(entry["cpu_median"])]
                for count, entry in listing.items()]
        lines.append(table(["active jobs", "list", "vs 1 job", "status playbook runs", "peak RSS MiB",
                            "controller CPU s"], rows))
        if 50 in listing and 1 in listing:
            ratio = listing[50]["median"] / listing[1]["median"]
            verdicts["list"] = (ratio <= 1.2, f"{ratio:.2f}x")
        else:
            verdicts["list"] = (None, "50 jobs not measured")
        last = listing[max(listing)]
        if last["where"]:
            lines += ["", f"### where the time goes: list with {max(listing)} active jobs", last["where"]]

    resubmit = results.get("resubmit")
    if resubmit:
        lines += ["", "## resubmitting an unchanged tree",
                  table(["nodes", "archive B", "1st submit shipped B", "resubmit shipped B",
                         "caches rewritten",
                         "sent to (probe)", "1st s", "resubmit s"],
                        [[resubmit["nodes"], resubmit["archive_size"], resubmit["first_bytes"],
                          resubmit["resubmit_bytes"], f"{resubmit['rewritten_nodes']}/{resubmit['nodes']}",
                          f"{resubmit['sent_to']}/{resubmit['nodes']}",
                          fmt_s(resubmit["first_seconds"]), fmt_s(resubmit["resubmit_seconds"])]])]
        verdicts["resubmit"] = (resubmit["resubmit_bytes"] == 0, f"{resubmit['resubmit_bytes']} B")

    arch = results.get("archive")
    if arch:
        lines += ["", "## archive.pack with a 1 GB ignored folder (s)",
                  table(["tree", "pack", "opened in ignored", "listed in ignored", "entries from it"],
                        [["with 1 GB ignored", f"{arch['with_median']:.3f}", arch["files_opened_in_ignored"],
                          arch["dirs_listed_in_ignored"], arch["entries_in_archive_from_ignored"]],
                         ["without it", f"{arch['without_median']:.3f}", "-", "-", "-"]]),
                  f"(reading the ignored 1 GB once would cost {arch['hash_ignored_seconds']:.2f} s; "
                  f"pack opened {arch['files_opened_total']} files and listed "
                  f"{arch['dirs_listed_total']} folders in all)"]
        untouched = (arch["files_opened_in_ignored"] == 0 and arch["dirs_listed_in_ignored"] == 0
                     and arch["entries_in_archive_from_ignored"] == 0)
        verdicts["archive"] = (untouched, f"{arch['files_opened_in_ignored']} files opened, "
                                          f"{arch['dirs_listed_in_ignored']} folders listed")

    startup = results.get("startup")
    if startup:
        rows = [["tsubmit --help", fmt_s(startup["help"]["median"])],
                ["tsubmit list (no jobs)", fmt_s(startup["list_empty"]["median"])]]
        if "dry_run" in startup:
            rows.append([f"tsubmit run --dry-run ({startup['dry_run_cluster']})",
                         fmt_s(startup["dry_run"]["median"])])
        rows.append(["python -c pass", fmt_s(startup["python"]["median"])])
        lines += ["", "## start-up (s)", table(["command", "wall"], rows)]
        help_s, list_s = startup["help"]["median"], startup["list_empty"]["median"]
        verdicts["startup"] = (help_s < 0.1, f"--help {help_s:.3f} s (empty list {list_s:.3f} s)")

    trips = results.get("round_trips")
    if trips:
        lines += ["", "## ssh invocations per task for one node (one -vvvv submit, N=1)"]
        rows = [[task[:72], trips["counts"][task]["exec"], trips["counts"][task]["put"]]
                for task in trips["order"]]
        total_exec = sum(c["exec"] for c in trips["counts"].values())
        total_put = sum(c["put"] for c in trips["counts"].values())
        rows.append(["total", total_exec, total_put])
        lines.append(table(["TASK", "ssh exec", "sftp/scp put"], rows))

    lines += ["", "## targets (machine shared: wall-time ratios move with the load; CPU seconds less)"]
    lines += [f"{verdict(verdicts[key][0]):>7}  {TARGETS[key]}: {verdicts[key][1]}" for key in TARGETS
              if key in verdicts]
    return "\n".join(lines)


def cpu_per_node(entry: dict, n: int, variant: str) -> float:
    """Controller CPU seconds of a submit (the tsubmit process tree), per node."""
    return entry["cpu"][f"{variant}_ctl_cpu"] / n


def submit_verdicts(submit: dict) -> dict:
    """Issue 17's submit targets, each (met or None when not measured, what was measured)."""
    def ratio(n, variant):
        return submit[n][f"{variant}_median"] / submit[n]["raw_median"]

    def unmeasured(n, what=""):
        return None, f"N={n} not measured{what}"

    verdicts = {}
    if 16 in submit:
        verdicts["n16_warm"] = (ratio(16, "warm") <= 1.5, f"{ratio(16, 'warm'):.2f}x")
        verdicts["n16_cold"] = (ratio(16, "cold") <= 2.0, f"{ratio(16, 'cold'):.2f}x")
        cold, warm = cpu_per_node(submit[16], 16, "cold"), cpu_per_node(submit[16], 16, "warm")
        verdicts["n16_cpu"] = (max(cold, warm) <= 0.15, f"{cold:.3f} s cold, {warm:.3f} s warm")
    else:
        verdicts.update(n16_warm=unmeasured(16), n16_cold=unmeasured(16), n16_cpu=unmeasured(16))
    verdicts["n8_warm"] = ((ratio(8, "warm") <= 1.5, f"{ratio(8, 'warm'):.2f}x") if 8 in submit
                           else unmeasured(8))
    if 1 in submit:
        entry = submit[1]
        if "torch_submit_median" in entry:
            verdicts["n1_torch_submit"] = (entry["warm_median"] < entry["torch_submit_median"],
                                           f"{entry['warm_median']:.2f} s against "
                                           f"{entry['torch_submit_median']:.2f} s")
        else:
            verdicts["n1_torch_submit"] = (None, "no --torch-submit")
        above = {variant: entry[f"{variant}_median"] - entry[f"floor_{variant}_median"]
                 for variant in ("cold", "warm")}
        verdicts["n1_floor"] = (max(above.values()) <= 0.15,
                                f"+{above['cold']:.2f} s cold, +{above['warm']:.2f} s warm")
    else:
        verdicts.update(n1_torch_submit=unmeasured(1), n1_floor=unmeasured(1))
    # Every round of a size ran clean, or the bench stopped there (Timed.check).
    verdicts["n64"] = ((ratio(64, "warm") <= 2.0, f"clean, warm {ratio(64, 'warm'):.2f}x") if 64 in submit
                       else unmeasured(64, " (--large)"))
    return verdicts


# --------------------------------------------------------------------- main


def _interrupt(*_):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1,4, 2 rounds, list up to 10 jobs")
    parser.add_argument("--large", action="store_true", help="also N=64")
    parser.add_argument("--sizes", help="comma-separated node counts instead (e.g. 16 or 1,4,16,64)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per figure (default 5; 2 with --quick)")
    parser.add_argument("--subnet", type=int, default=30, help="loopback subnet 127.0.S.0/24 of the nodes")
    parser.add_argument("--torch-submit", metavar="PATH",
                        help="an installed torch-submit executable to compare")
    parser.add_argument("--sections", default="submit,resubmit,list,archive,startup",
                        help="comma-separated subset of submit,resubmit,list,archive,startup")
    parser.add_argument("--no-round-trips", dest="round_trips", action="store_false",
                        help="skip the -vvvv submit that counts ssh invocations per task")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--label", help="what is measured, for the report (e.g. the commit)")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 5)
    sizes = [1, 4] if args.quick else [1, 4, 16]
    if args.large:
        sizes.append(64)
    if args.sizes:
        sizes = sorted({int(size) for size in args.sizes.split(",")})
    list_counts = [1, 10] if args.quick else [1, 10, 50]
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if os.geteuid() != 0:
        parser.error("run as root: the sshd nodes need it (see tests/harness/sshd.py)")

    # SIGTERM unwinds like Ctrl-C, so the nodes and folders are cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    bench_dir = Path(tempfile.mkdtemp(prefix="tsb-bench-", dir="/tmp"))
    bench_dir.chmod(0o755)
    wd = make_workdir(bench_dir)
    needs_nodes = sections & {"submit", "resubmit", "list"}
    count = max(sizes) if "submit" in sections else 4
    nodes = SshNodes(count, subnet=args.subnet, **({"user": ensure_bash_user()} if args.torch_submit else {}))
    ctx = Context(args, nodes, bench_dir, wd)
    ctx.results["loadavg_start"] = loadavg()
    try:
        if needs_nodes:
            log(f"starting {count} sshd nodes on 127.0.{args.subnet}.0/24")
            nodes.start()
        if "submit" in sections:
            section_submit(ctx, sizes)
        if "resubmit" in sections:
            section_resubmit(ctx, 4)
        if "list" in sections:
            section_list(ctx, list_counts)
        if "archive" in sections:
            section_archive(ctx)
        if "startup" in sections:
            section_startup(ctx, f"c{max(sizes)}" if "submit" in sections else None)
        text = report(ctx, sizes)
        print(text)
        print(f"\n(total bench time {time.monotonic() - began:.0f} s)")
        if args.json:
            Path(args.json).write_text(json.dumps(ctx.results, indent=1, default=str))
    finally:
        for home in ctx.homes:
            with contextlib.suppress(Exception):
                close_masters(home)
        nodes.stop()
        for home in ctx.homes:
            shutil.rmtree(home, ignore_errors=True)
        for path in ctx.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(bench_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
