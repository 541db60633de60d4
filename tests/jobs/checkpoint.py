"""Resume from ckpt/step.txt when it is there, then write it (a test job).

Prints "rank R resumed from: TEXT" or "rank R fresh". Then rank 0 (every rank
with `all`) writes ckpt/step.txt, "attempt A rank R", and sets the file's and
the folder's modification time to a stamp that grows with the attempt and the
rank, so which node's copy is the newest is known whatever the machine's load.

With `wait`, it then waits to be stopped, a checkpoint written.

Usage: checkpoint.py [all] [wait]
"""

import os
import sys
import time

rank, attempt = int(os.environ["NODE_RANK"]), int(os.environ["TSUBMIT_ATTEMPT"])
path = os.path.join("ckpt", "step.txt")
if os.path.exists(path):
    with open(path) as checkpoint:
        print(f"rank {rank} resumed from: {checkpoint.read()}", flush=True)
else:
    print(f"rank {rank} fresh", flush=True)
if rank == 0 or "all" in sys.argv[1:]:
    os.makedirs("ckpt", exist_ok=True)
    with open(path + ".tmp", "w") as checkpoint:
        checkpoint.write(f"attempt {attempt} rank {rank}")
    os.replace(path + ".tmp", path)
    stamp = 1_700_000_000 + attempt * 100 + rank
    os.utime(path, (stamp, stamp))
    os.utime("ckpt", (stamp, stamp))
while "wait" in sys.argv[1:]:
    time.sleep(1)
