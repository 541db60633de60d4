"""Print the environment contract as one JSON line (a test job)."""

import json
import os

NAMES = ["MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "NNODES", "NPROC_PER_NODE",
         "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "TSUBMIT_JOB_ID", "TSUBMIT_JOB_NAME",
         "TSUBMIT_ATTEMPT", "TSUBMIT_NODE_IPS", "TSUBMIT_HOSTFILE", "OMP_NUM_THREADS", "PATH"]
values = {name: os.environ.get(name) for name in NAMES}
values.update({k: v for k, v in os.environ.items() if k.startswith("JOB_")})
with open(values["TSUBMIT_HOSTFILE"]) as hostfile:
    values["hostfile"] = hostfile.read()
values["cwd_files"] = sorted(os.listdir("."))
print("ENV " + json.dumps(values), flush=True)
