"""Start-up cost of tsubmit's rank order for torchrun (roles/preflight/files/rank_order.py).

Runs a two-node torchrun job on this machine (two agents, c10d rendezvous on
127.0.0.1, one gloo worker each that joins the group and leaves), REPEAT
times with the helper on PYTHONPATH (as tsubmit runs torchrun) and REPEAT
times without, alternately, and prints the median wall time of each. By hand,
never in CI: `python bench/bench_rank_order.py [REPEAT]`.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "roles" / "preflight" / "files" / "rank_order.py"
JOB = ("import torch.distributed as dist\n"
       "dist.init_process_group('gloo'); dist.barrier(); dist.destroy_process_group()\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_run(work: Path, with_helper: bool) -> float:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    port = free_port()
    agents = []
    started = time.monotonic()
    for rank, address in ((0, "127.0.0.2"), (1, "127.0.0.1")):  # the head at the higher address
        env = {**os.environ, "NODE_RANK": str(rank)}
        env.pop("PYTHONPATH", None)
        if with_helper:
            env["PYTHONPATH"] = str(work / "lib")
        agents.append(subprocess.Popen(
            [torchrun, "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1", "--rdzv-backend=c10d",
             f"--rdzv-endpoint=127.0.0.2:{port}", "--rdzv-id=bench",
             f"--rdzv-conf=is_host={int(rank == 0)}", f"--local-addr={address}", "--no-python",
             sys.executable, str(work / "job.py")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    codes = [agent.wait(timeout=120) for agent in agents]
    if codes != [0, 0]:
        raise SystemExit(f"torchrun failed: {codes}")
    return time.monotonic() - started


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "lib").mkdir()
        shutil.copyfile(HELPER, work / "lib" / "sitecustomize.py")
        (work / "job.py").write_text(JOB)
        times = {True: [], False: []}
        for _ in range(repeat):
            for with_helper in (False, True):
                times[with_helper].append(one_run(work, with_helper))
    for with_helper, label in ((False, "torchrun alone"), (True, "with tsubmit's rank order")):
        values = times[with_helper]
        print(f"{label:28s} median {statistics.median(values):.2f}s  "
              f"(min {min(values):.2f}s, max {max(values):.2f}s, {len(values)} runs)")


if __name__ == "__main__":
    main()
