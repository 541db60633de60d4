"""A rank that hangs while the others keep printing (a test job): every rank
prints a tick every 0.3 s, TICKS of them, then exits 0; the rank whose NODE_RANK
is HUNG, in attempt HUNG_ATTEMPT (default 1), prints a line and then blocks in
stuck_in_collective, its process alive and silent (as a rank blocked in a
collective whose peer is gone), a function a post-mortem's stack names.

Usage: hang_on_rank.py HUNG TICKS [HUNG_ATTEMPT]
"""

import os
import sys
import time


def stuck_in_collective():
    while True:
        time.sleep(60)


hung, ticks = int(sys.argv[1]), int(sys.argv[2])
hung_attempt = sys.argv[3] if len(sys.argv) > 3 else "1"
rank = int(os.environ["NODE_RANK"])
print(f"rank {rank} up, attempt {os.environ['TSUBMIT_ATTEMPT']}", flush=True)
if rank == hung and os.environ["TSUBMIT_ATTEMPT"] == hung_attempt:
    print(f"rank {rank} waits for its peers", flush=True)
    stuck_in_collective()
for tick in range(ticks):
    print(f"rank {rank} tick {tick}", flush=True)
    time.sleep(0.3)
