"""How long `--sync-dir` takes before a next attempt: SIZE MB from rank 0's node
to the job's other nodes, each with a remote root of its own, on loopback sshd
nodes (tests/harness), through the controller as a relaunch does it.

    .venv/bin/python bench/bench_sync.py [--size-mb 100] [--receivers 3] [--rounds 3]

Prints each round's wall time (both playbook runs: the probe, then the pack,
fetch and place) and the bytes brought to the controller.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import SshNodes  # noqa: E402

WRITER = """import os
os.makedirs("ckpt", exist_ok=True)
if os.environ["NODE_RANK"] == "0":
    with open("ckpt/model.pt", "wb") as out:
        out.write(os.urandom({size}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--receivers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tsb-", dir="/tmp"))
    work = home / "work"
    work.mkdir()
    (work / "write.py").write_text(WRITER.format(size=args.size_mb * 1_000_000))
    env = {**os.environ, "TSUBMIT_HOME": str(home)}
    try:
        with SshNodes(args.receivers + 1, subnet=int(os.environ.get("TSUBMIT_TEST_SUBNET", "0")),
                      first_host=100) as nodes:
            import yaml

            cluster = home / "config" / "clusters" / "bench.yml"
            cluster.parent.mkdir(parents=True)
            cluster.write_text(yaml.safe_dump({"all": {"hosts": {
                node.name: nodes.host_vars(node) for node in nodes.nodes}}}))
            run = subprocess.run([sys.executable, "-m", "tsubmit", "run", "-c", "bench", "--executor",
                                  "distributed", "--wait", "--workdir", str(work), "--sync-dir", "ckpt",
                                  "--", "python", "write.py"], env=env, cwd=REPO, capture_output=True,
                                 text=True, check=True)
            job_id = re.search(r"job (\w+) ", run.stdout).group(1)
            for round_ in range(1, args.rounds + 1):
                for node in nodes.nodes[1:]:  # each round sends to every receiver again
                    shutil.rmtree(node.remote_root / job_id / "workdir" / "ckpt", ignore_errors=True)
                started = time.monotonic()
                timed = subprocess.run([sys.executable, "-c", SYNC, job_id], env=env, cwd=REPO,
                                       capture_output=True, text=True, check=True)
                wall = time.monotonic() - started
                print(f"round {round_}: {wall:.1f} s wall (process), {timed.stdout.strip()}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


SYNC = """
import sys
from tsubmit.jobs import plan, sync_dirs
from tsubmit.local.store import open_store
job = open_store().find(sys.argv[1])
synced = sync_dirs.sync(job, plan.replan(job))
print(f"sync {synced.seconds:.1f} s, {synced.size / 1e6:.0f} MB to the controller, "
      f"sent to {', '.join(synced.sent_to)}")
"""

if __name__ == "__main__":
    main()
