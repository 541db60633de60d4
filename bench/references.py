"""The references a submit is measured against: raw parallel ssh (the least a
tool can do) and, when given, the original torch-submit."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from common import BASH_USER, SshNodes, Timed, run_timed

RAW_SCRIPT = """set -e
d={root}/raw-{tag}
mkdir -p "$d/workdir"
tar -xzf - -C "$d/workdir"
cd "$d/workdir"
setsid {python} -c 'import time; time.sleep(30)' >"$d/output.log" 2>&1 </dev/null &
echo $!
"""


def raw_submit(nodes: SshNodes, members, archive_bytes: bytes) -> tuple[float, str, dict]:
    """One ssh per node, all at once; returns (seconds, tag, node name -> pid)."""
    tag = uuid.uuid4().hex[:10]

    def one(node):
        script = RAW_SCRIPT.format(root=node.remote_root, tag=tag, python=nodes.python)
        return subprocess.run([*nodes.ssh_args(node), script], input=archive_bytes, capture_output=True,
                              timeout=300, check=False)

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        start = time.perf_counter()
        results = list(pool.map(one, members))
        seconds = time.perf_counter() - start
    pids = {}
    for node, result in zip(members, results, strict=True):
        if result.returncode != 0:
            raise RuntimeError(f"raw ssh to {node.name} exited {result.returncode}: {result.stderr.decode()}")
        pids[node.name] = int(result.stdout.split()[-1])
    return seconds, tag, pids


def raw_cleanup(nodes: SshNodes, members, tag: str, pids: dict) -> None:
    def one(node):
        # dash's kill takes no "--": a negative pid is the process group (setsid made it one).
        command = f"kill -KILL -{pids[node.name]} 2>/dev/null; rm -rf {node.remote_root}/raw-{tag}"
        nodes.ssh(node, command, check=False)

    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        list(pool.map(one, members))


# --------------------------------------------------------------------- torch-submit


def ensure_bash_user() -> str:
    """The nodes' user when torch-submit is compared: every command torch-submit
    starts begins with `source ~/.profile`, which the harness's light user (shell
    /bin/sh, dash) does not know. This user's shell is bash with Debian's skeleton
    rc files, which return at once in a non-interactive shell; every tool of the
    comparison runs against the same nodes as this user."""
    try:
        pwd.getpwnam(BASH_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                        f"/var/lib/{BASH_USER}", "--shell", "/bin/bash", BASH_USER], check=True)
    return BASH_USER


def torch_submit_setup(path: str, bench_dir: Path, nodes: SshNodes, sizes: list[int]) -> dict:
    """A HOME for torch-submit with one cluster per size; its config lives under ~/.cache."""
    home = bench_dir / "torch-submit-home"
    config = home / ".cache" / "torch-submit" / "config.yaml"
    config.parent.mkdir(parents=True)

    def node_entry(node):
        return {"public_ip": node.address, "private_ip": None, "num_gpus": 1, "nproc": 1,
                "ssh_user": node.user, "ssh_pub_key_path": str(nodes.identity_file),
                "ssh_port": node.port}

    clusters = {
        f"c{n}": {"head_node": node_entry(nodes.nodes[0]),
                  "worker_nodes": [node_entry(node) for node in nodes.nodes[1:n]]}
        for n in sizes
    }
    config.write_text(yaml.safe_dump({"clusters": clusters, "databases": {}}))
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(nodes.known_hosts, home / ".ssh" / "known_hosts")
    env = {**os.environ, "HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("VIRTUAL_ENV", None)
    # Its runtime environment prefixes the node's torchrun line: the nodes' python
    # and torchrun come first on PATH, as tsubmit_python does for tsubmit.
    runtime_env = home / "runtime_env.yaml"
    runtime_env.write_text(yaml.safe_dump({"PATH": f"{Path(nodes.python).parent}:/usr/bin:/bin"}))
    return {"path": path, "env": env, "home": home, "runtime_env": runtime_env}


def torch_submit_run(ts: dict, n: int, wd: Path) -> Timed:
    # torchrun is its default executor; its `distributed` one indexes the
    # worker list by rank and fails on the last node. It joins the command's
    # words with spaces, unquoted, so the rank is train.py (it sleeps 30 s too)
    # rather than `python -c "..."`.
    return run_timed([ts["path"], "job", "submit", "--cluster", f"c{n}", "--working-dir", str(wd),
                      "--executor", "torchrun", "--runtime-env", str(ts["runtime_env"]), "--",
                      "python", "train.py"], env=ts["env"], cwd=wd)

