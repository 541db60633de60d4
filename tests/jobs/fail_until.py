"""Print the attempt and why the one before ended, then exit with CODE on node
rank RANK while TSUBMIT_ATTEMPT is at most UNTIL, and 0 otherwise (a test job).

Usage: fail_until.py RANK CODE UNTIL
"""

import json
import os
import sys

rank, code, until = (int(argument) for argument in sys.argv[1:4])
attempt = int(os.environ["TSUBMIT_ATTEMPT"])
print("ATTEMPT " + json.dumps({"node_rank": int(os.environ["NODE_RANK"]), "attempt": attempt,
                               "cause": os.environ.get("TSUBMIT_RESTART_CAUSE")}), flush=True)
sys.exit(code if int(os.environ["NODE_RANK"]) == rank and attempt <= until else 0)
