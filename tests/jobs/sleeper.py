"""Sleep for a long time, printing a tick each second (a test job to stop).

With --ignore-term the process ignores SIGTERM, so only SIGKILL ends it.
"""

import signal
import sys
import time

if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
for tick in range(3600):
    print(f"tick {tick}", flush=True)
    time.sleep(1)
