"""Print LINES lines, wait until the file GATE exists (relative to the job's
folder), print LINES more, then exit with CODE (a test job). Lines carry the
torch RANK when there is one. Nothing is flushed: the job's environment
decides how its output is buffered.

Usage: gated.py LINES CODE GATE
"""

import os
import sys
import time

lines, code, gate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
worker = os.environ.get("RANK", "-")
for line in range(lines):
    print(f"line {line} of worker {worker}")
print(f"to stderr from worker {worker}", file=sys.stderr)
while not os.path.exists(gate):
    time.sleep(0.05)
for line in range(lines, 2 * lines):
    print(f"line {line} of worker {worker}")
sys.exit(code)
