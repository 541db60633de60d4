"""Probe a node before a job starts; print one JSON line for the preflight role.

Usage: probe.py REMOTE_ROOT HEAD_ADDRESS NPROC ARCHIVE_DIGEST PATH_PREFIX [COMMAND...]

Resolves and creates the remote root, checks that each COMMAND is found on
the PATH the job will see, counts GPUs when NPROC is 0, and, on the head
(HEAD_ADDRESS not empty), picks a free port for the rendezvous. One script,
so probing a node costs a single remote round trip.
"""

import json
import os
import shutil
import socket
import subprocess
import sys


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def count_gpus() -> int:
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def free_port(address: str) -> int:
    try:
        family = socket.getaddrinfo(address, None)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            return probe.getsockname()[1]
    except OSError as error:
        fail(f"cannot bind the rendezvous address {address} on this node ({error}); "
             "set tsubmit_rdzv_address to an address of this node")


def main() -> None:
    root, head_address, nproc, digest, path_prefix, *commands = sys.argv[1:]
    root = os.path.expanduser(root)
    try:
        os.makedirs(os.path.join(root, ".archives"), exist_ok=True)
    except OSError as error:
        fail(f"cannot create the remote root {root}: {error.strerror}; set tsubmit_remote_root")
    search_path = os.pathsep.join(filter(None, [path_prefix, os.environ.get("PATH", "")]))
    for command in commands:
        if shutil.which(command, path=search_path) is None:
            fail(f"{command} not found on this node (PATH={search_path}); set tsubmit_torchrun "
                 "or tsubmit_python to its full path (a venv or conda env on the node)")
    gpus = int(nproc) or count_gpus() or 1
    archive = os.path.join(root, ".archives", f"{digest}.tar.gz")
    print(json.dumps({
        "remote_root": os.path.realpath(root),
        "gpus": gpus,
        "port": free_port(head_address) if head_address else None,
        "archive_present": os.path.isfile(archive),
    }))


main()
