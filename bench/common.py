"""What every part of the bench shares: running and timing a command, the CPU
and memory of a process tree, the nodes' CPU, and the fixtures (the working
directory, clusters, TSUBMIT_HOMEs, jobs). Measuring only: the report lives in
report.py."""

from __future__ import annotations

import compileall
import contextlib
import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.harness import SshNodes  # noqa: E402
from tests.harness.processes import node_processes  # noqa: E402
from tests.harness.sshd import children_map, descendants  # noqa: E402
from tsubmit.local import archive as archives  # noqa: E402

_SCRIPT = Path(sys.executable).parent / "tsubmit"
TSUBMIT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tsubmit"]
SLEEP = ["python", "-c", "import time; time.sleep(30)"]
LONG_SLEEP = ["python", "-c", "import time; time.sleep(3600)"]
SUBMIT_TIMEOUT = 1800
BENCH = Path(__file__).resolve().parent
FLOOR = BENCH / "ansible_floor.py"
SLEEPERS = r"time\.sleep\(30\)|train\.py"  # what the tools' ranks run
BASH_USER = "tsubmit-bench-bash"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None




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


class _Sampler:
    """A reading of process PID from /proc every INTERVAL seconds, on a thread,
    from watch() until stop(); subclasses say what one reading keeps (sample())."""

    def __init__(self, interval: float):
        self.interval = interval
        self._pid: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, pid: int) -> None:
        self._pid = pid
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.is_set() and self.sample(self._pid):
            self._done.wait(self.interval)

    def sample(self, pid: int) -> bool:
        """Take one reading; False once there is nothing more to read."""
        raise NotImplementedError


class TreeSampler(_Sampler):
    """Peak of the summed PSS of a process and its live descendants, sampled.

    PSS splits shared pages (Ansible's forks share most of theirs with the
    parent) among the processes, so the sum is the real footprint. Reading
    smaps costs CPU, so it is only used in untimed runs.
    """

    def __init__(self, interval: float = 0.1):
        super().__init__(interval)
        self.peak_kib = 0
        self.peak_processes = 0

    def sample(self, pid: int) -> bool:
        pids = [*descendants(pid), pid]
        total = sum(_pss_kib(each) for each in pids)
        if total > self.peak_kib:
            self.peak_kib, self.peak_processes = total, len(pids)
        return True


class SelfCpuSampler(_Sampler):
    """The CPU seconds of a process itself (not its children), read from
    /proc every 10 ms while it runs: the last reading before it exits is what
    it spent, within 10 ms (wait4 gives only the whole tree)."""

    def __init__(self, interval: float = 0.01):
        super().__init__(interval)
        self.seconds = 0.0

    def sample(self, pid: int) -> bool:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
            fields = text[text.rindex(")") + 2:].split()
            self.seconds = (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, ValueError, IndexError):
            return False
        return True


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


def write_cluster(home: Path, name: str, nodes: SshNodes, members, spares=()) -> None:
    """Like tests/conftest.py's Cli.write_cluster; SPARES with tsubmit_spare."""
    hosts = {node.name: nodes.host_vars(node) for node in members}
    hosts.update({node.name: {**nodes.host_vars(node), "tsubmit_spare": True} for node in spares})
    path = home / "config" / "clusters" / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))


def new_home(bench_dir: Path, label: str) -> Path:
    # Short: SSH control sockets live under it (see tsubmit.nodes.ansible_env.control_dir).
    home = Path(tempfile.mkdtemp(prefix=f"tsb-{label}-", dir="/tmp"))
    return home


def compile_checkout(checkout: Path = REPO) -> None:
    """Byte-compile the tsubmit measured, as installing it does. A snapshot
    from `git archive` has no __pycache__, and with PYTHONDONTWRITEBYTECODE
    set (as in this machine's sessions) none is ever written: every `tsubmit`
    started would compile each of its modules again, about 0.2 s of CPU that
    no installed tsubmit spends."""
    compileall.compile_dir(checkout / "tsubmit", quiet=1)


def tsubmit_env(home: Path) -> dict:
    # The tsubmit measured is the checkout this file lives in, whatever the
    # venv's editable install points to (run the bench from a snapshot of a
    # commit while others edit the working tree).
    # Every runner data dir kept: the bench reads the runs' events (tsubmit keeps failed ones only).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "TSUBMIT_HOME": str(home), "NO_COLOR": "1", "PYTHONPATH": path,
            "TSUBMIT_KEEP_RUNS": "1"}


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


def kill_node_processes(members, pattern: str) -> int:
    """SIGKILL the processes of these nodes whose command line matches (by pid)."""
    regex = re.compile(pattern)
    killed = 0
    for node in members:
        for pid, cmd in node_processes(node):  # the repo's own harness
            if regex.search(cmd):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
    return killed


def bump_tree(wd: Path) -> None:
    """A new archive: one small file changes (untimed), like an edit between submits."""
    (wd / "src" / "revision.py").write_text(f"REVISION = {uuid.uuid4().hex!r}\n")

