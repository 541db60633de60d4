"""The bench's recovery section (issue 28): how long a job takes to run again
once a node is lost, and what one `tsubmit watch` pass costs.

* relaunch: a job on 3 nodes of a cluster with a spare (4 nodes), restarted
  by `--restarts 1`, watched by `tsubmit watch --every WATCH_EVERY`; one node
  is lost for real (tests/harness: its sshd and every connection to it gone,
  its processes killed). Timed from that moment until every rank of the next
  attempt runs, read from the nodes' /proc (each rank's marker names its
  attempt). Of that, the node timeout (--node-timeout) is a wait by design;
  the rest is noticing it (a pass every WATCH_EVERY), stopping the attempt
  and launching the next one.
* watch pass: `tsubmit watch --once` over ACTIVE_JOBS running jobs with a
  restart policy on 8 nodes (each job on 2 of them): wall time and the
  controller's CPU (the pass and everything it waited for).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

from common import (
    LONG_SLEEP,
    TSUBMIT,
    delete_jobs,
    job_id_of,
    log,
    median,
    new_home,
    node_processes,
    run_timed,
    tsubmit_env,
    write_cluster,
)
from section_submit import Context

NODE_TIMEOUT = 10.0  # s: --node-timeout of the measured job (default 2m)
WATCH_EVERY = 5.0  # s: the watcher's --every (default 30s)
ACTIVE_JOBS = 20
PASSES = 3


def attempt_running(node, job_id: str, rank: int, attempt: int) -> bool:
    """Whether the command of that attempt of that rank runs on NODE (its marker, from /proc)."""
    marker = f"TSUBMIT_RANK_MARKER={job_id}.r{rank}.a{attempt}".encode()
    for pid, command in node_processes(node):
        with contextlib.suppress(OSError):
            if "time.sleep" in command and marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return True
    return False


def section_recovery(ctx: Context) -> None:
    ctx.results["recovery"] = {"relaunch": relaunch_after_a_lost_node(ctx), "watch": watch_pass(ctx)}


def relaunch_after_a_lost_node(ctx: Context) -> dict:
    nodes = ctx.nodes
    members, spare = nodes.nodes[:3], nodes.nodes[3]
    home = new_home(ctx.bench_dir, "rc")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    write_cluster(home, "c", nodes, members, [spare])
    started = run_timed([*TSUBMIT, "run", "-c", "c", "--executor", "distributed", "--restarts", "1",
                         "--node-timeout", f"{NODE_TIMEOUT:g}s", "--", *LONG_SLEEP],
                        env=env, cwd=ctx.wd).check("submit")
    job_id = job_id_of(started)
    watcher = subprocess.Popen([*TSUBMIT, "watch", "--every", f"{WATCH_EVERY:g}s"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lost = members[1]
    try:
        time.sleep(WATCH_EVERY)  # a pass or so with every node answering, as in life
        lost_at = time.monotonic()
        nodes.lose_node(lost)
        after = [members[0], spare, members[2]]  # the spare takes rank 1
        deadline = lost_at + NODE_TIMEOUT + 600
        while not all(attempt_running(node, job_id, rank, 2) for rank, node in enumerate(after)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"attempt 2 of job {job_id} did not run within 600 s past the timeout")
            time.sleep(0.1)
        seconds = time.monotonic() - lost_at
    finally:
        watcher.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            watcher.wait(timeout=60)
        watcher.kill()
        nodes.start_node(lost)
        nodes.kill_processes(lost)
        delete_jobs(env, [job_id])
    log(f"recovery: every rank of attempt 2 ran {seconds:.1f} s after the node was lost "
        f"(node timeout {NODE_TIMEOUT:g} s, a pass every {WATCH_EVERY:g} s)")
    return {"seconds": seconds, "node_timeout": NODE_TIMEOUT, "watch_every": WATCH_EVERY, "nodes": 3,
            "spares": 1}


def watch_pass(ctx: Context) -> dict:
    nodes = ctx.nodes
    home = new_home(ctx.bench_dir, "wp")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    members = nodes.nodes[:8]
    write_cluster(home, "c", nodes, members)
    jobs = []
    try:
        for index in range(ACTIVE_JOBS):
            pair = [members[(2 * index) % 8], members[(2 * index + 1) % 8]]
            limit = ",".join(node.name for node in pair)
            jobs.append(job_id_of(run_timed([*TSUBMIT, "run", "-c", "c", "--limit", limit, "--executor",
                                             "distributed", "--restarts", "1", "--", *LONG_SLEEP],
                                            env=env, cwd=ctx.wd).check("submit")))
        passes = [run_timed([*TSUBMIT, "watch", "--once"], env=env).check("watch --once")
                  for _ in range(PASSES)]
    finally:
        delete_jobs(env, jobs)
    walls, cpus = [p.seconds for p in passes], [p.cpu_s for p in passes]
    log(f"recovery: a watch pass over {ACTIVE_JOBS} jobs on 8 nodes: {median(walls):.2f} s wall, "
        f"{median(cpus):.2f} s controller CPU")
    return {"jobs": ACTIVE_JOBS, "nodes": 8, "wall_median": median(walls), "cpu_median": median(cpus),
            "walls": walls, "cpus": cpus}
