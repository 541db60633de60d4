"""A rank that fails while the others hang (a test job): the rank whose NODE_RANK
is FAILING prints a line and exits CODE; the others sleep in wait_for_peers, a
function a post-mortem's stack names. With GATE, the failing rank exits only once
that file exists.

Usage: stuck_unless.py FAILING CODE [GATE]
"""

import os
import sys
import time


def wait_for_peers():
    time.sleep(600)


failing, code = int(sys.argv[1]), int(sys.argv[2])
print(f"rank {os.environ['NODE_RANK']} up", flush=True)
if int(os.environ["NODE_RANK"]) == failing:
    time.sleep(1)
    while len(sys.argv) > 3 and not os.path.exists(sys.argv[3]):
        time.sleep(0.1)
    print(f"rank {failing}: giving up with {code}", flush=True)
    sys.exit(code)
wait_for_peers()
