"""Leave a daemon behind: a child in a session of its own (setsid), which a
stop of the rank's process group alone would not reach; then tick (a test job)."""

import subprocess
import time

subprocess.Popen(["sleep", "600"], start_new_session=True)
for tick in range(3600):
    print(f"tick {tick}", flush=True)
    time.sleep(1)
