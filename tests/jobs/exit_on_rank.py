"""Print a line, then exit with CODE on node rank RANK and 0 elsewhere (a test job).

Usage: exit_on_rank.py RANK CODE
"""

import os
import sys

rank, code = int(sys.argv[1]), int(sys.argv[2])
node_rank = int(os.environ["NODE_RANK"])
print(f"node {node_rank} says hello", flush=True)
sys.exit(code if node_rank == rank else 0)
