"""GPU leases on CPU nodes: a cluster whose nodes declare `tsubmit_gpus: 4` (their
GPUs are ids 0..3, each node with a lease folder of its own) and a job that holds
the GPUs it leased until it is stopped."""

from __future__ import annotations

import subprocess
import threading

from .jobs import TSUBMIT, job_id_of
from .processes import stderr_reader
from .waiting import eventually

# A rank that prints what it was given, then holds its GPUs for a while.
HOLD = ["python", "-c", "import os, time; print('CVD', os.environ.get('CUDA_VISIBLE_DEVICES'), "
        "os.environ['NPROC_PER_NODE'], flush=True); time.sleep(600)"]


def gpu_cluster(nodes, members, *controllers, name: str = "c") -> str:
    """The cluster NAME of MEMBERS, each declaring 4 GPUs, known to every one of CONTROLLERS
    (one or more TSUBMIT_HOMEs: what each researcher's laptop knows)."""
    for controller in controllers:
        controller.write_cluster(name, nodes, members, tsubmit_gpus=4)
    return name


def hold_gpus(cli, cluster: str, *args: str) -> str:
    """Start a distributed HOLD job on CLUSTER (ARGS: more run options, e.g. --gpus); its id."""
    return job_id_of(cli.ok("run", "-c", cluster, "--executor", "distributed", *args, "--", *HOLD))


def queued_run(cli, cluster: str, *args: str) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    """`tsubmit run --queue ARGS` on CLUSTER, started and seen queued (its 'queued:' line): the
    process, its stderr lines (read on by the thread returned, which ends with it)."""
    argv = [*TSUBMIT, "run", "-c", cluster, "--executor", "distributed", "--queue", *args]
    process = subprocess.Popen(argv, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, reader = stderr_reader(process)
    try:
        eventually(lambda: any("queued:" in line for line in lines), timeout=60,
                   message="'queued:' from run --queue", detail=lambda: lines)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, lines, reader


def interrupted_while_queued(cli, cluster: str, number: int, *args: str) -> tuple[int, str]:
    """`tsubmit run --queue ARGS` on CLUSTER, sent signal NUMBER once it is queued: its exit
    code and stderr. It is killed if the signal did not end it."""
    process, lines, reader = queued_run(cli, cluster, *args)
    try:
        process.send_signal(number)
        process.wait(timeout=60)
        reader.join(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, "".join(lines)
