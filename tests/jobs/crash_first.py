"""A crash as real ones go (a test job): every rank joins a gloo group, then
the worker of global rank CRASH prints a last line and exits CODE at once; the
others reach the next collective a few seconds later and die of the gloo error
its exit caused (exit 1), so the rank that failed first is not the lowest.

Usage: crash_first.py CRASH CODE
"""

import os
import sys
import time

import torch
import torch.distributed as dist

crash, code = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
dist.barrier()
if rank == crash:
    print(f"rank {rank}: giving up with {code}", flush=True)
    os._exit(code)
time.sleep(3)
dist.all_reduce(torch.ones(1))  # raises: the crashed rank's connection is gone
time.sleep(60)  # not reached; if it were, the job would not fail at once
