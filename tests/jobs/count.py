"""Print N lines a fraction of a second apart, then exit with CODE (a test job).

Usage: count.py N CODE
"""

import sys
import time

lines, code = int(sys.argv[1]), int(sys.argv[2])
for line in range(lines):
    print(f"line {line}", flush=True)
    time.sleep(0.3)
sys.exit(code)
