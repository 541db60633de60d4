"""Print where this rank stands as one JSON line, then sleep, ticking (a test job to lose nodes under)."""

import json
import os
import time

NAMES = ["NODE_RANK", "WORLD_SIZE", "NNODES", "MASTER_ADDR", "RANK", "TSUBMIT_ATTEMPT"]
print("REPORT " + json.dumps({name: os.environ.get(name) for name in NAMES}), flush=True)
for tick in range(3600):
    print(f"tick {tick}", flush=True)
    time.sleep(1)
