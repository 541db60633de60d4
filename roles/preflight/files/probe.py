"""Probe a node before a job starts; print one JSON line for the preflight role.

Usage: probe.py REQUEST_JSON, with keys: remote_root, address (the node's
rendezvous address, reported back), head_address (empty unless this node is
the head), nproc (processes per node on a node without GPUs; 0: 1),
gpus_declared (the host's tsubmit_gpus, 0 if unset), gpus_wanted (the job's
--gpus: null for all of the node's GPUs, 0 for none), archive_digest, job_id,
path_prefix, commands (each must be found on the job's PATH), container
(null, or {engine, image, pull}), rank_order (true for torchrun: put
rank_order.py, sent beside this script, in <job dir>/tsubmit-lib/ as
sitecustomize.py), and dry (Ansible's check mode: create and pull nothing).

Resolves and creates the remote root, checks the commands, counts GPUs, pulls
the container image as the pull policy says, and on the head picks a free
port for the rendezvous. One script, so probing a node costs a single remote
round trip.
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


def gpu_plan(request: dict) -> dict:
    """The node's GPU ids (gpu_lease.py, sent beside this script), how many the
    job leases here and how many processes it runs. A node with nothing to
    lease runs nproc processes (1 when 0), as before GPU leases."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from gpu_lease import nvidia_gpus

    real = nvidia_gpus()
    ids = real or list(range(max(int(request.get("gpus_declared") or 0), 0)))
    wanted = request.get("gpus_wanted")
    if not ids:
        return {"gpu_ids": [], "lease": 0, "gpus": int(request["nproc"]) or 1, "has_gpus": False}
    lease = len(ids) if wanted is None else int(wanted)
    if lease > len(ids):
        fail(f"the job asks for {lease} GPUs per node (--gpus) but this node has {len(ids)} "
             f"({','.join(map(str, ids))})")
    return {"gpu_ids": ids, "lease": lease, "gpus": lease or 1, "has_gpus": bool(real)}


def free_port(address: str) -> int:
    try:
        family = socket.getaddrinfo(address, None)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            return probe.getsockname()[1]
    except OSError as error:
        fail(f"cannot bind the rendezvous address {address} on this node ({error}); "
             "set tsubmit_rdzv_address to an address of this node")


def ensure_image(engine: str, image: str, pull: str, dry: bool) -> None:
    present = subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode == 0
    if pull == "never" and not present:
        fail(f"image {image} is not on this node and --pull is never; pull it or use --pull missing")
    if (pull == "always" or not present) and not dry:
        pulled = subprocess.run([engine, "pull", "--quiet", image], capture_output=True, text=True)
        if pulled.returncode != 0:
            reason = (pulled.stderr.strip().splitlines() or ["no reason given"])[-1]
            fail(f"cannot pull image {image} with {engine}: {reason}")


def install_rank_order(job_dir: str) -> None:
    """<job dir>/tsubmit-lib/sitecustomize.py, which makes torch's node ranks
    follow tsubmit's (see rank_order.py); written through a rename, so ranks
    of nodes that share a filesystem never read half a file."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rank_order.py")
    folder = os.path.join(job_dir, "tsubmit-lib")
    try:
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".sitecustomize.py.{os.getpid()}")
        shutil.copyfile(source, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, os.path.join(folder, "sitecustomize.py"))
    except OSError as error:
        fail(f"cannot write {folder}/sitecustomize.py: {error.strerror}; set tsubmit_remote_root "
             "to a folder the SSH user can write")


def missing_command(command: str, search_path: str, launcher: str | None) -> str:
    """What to say when COMMAND is not found: the typo in the user's own command
    (`-- pyhton train.py`) is not a reason to change the inventory."""
    import difflib

    if command == launcher:
        return (f"{command} not found on this node (PATH={search_path}); set tsubmit_torchrun "
                "to its full path, or tsubmit_python to a venv or conda env that has torch")
    names = set()
    for folder in search_path.split(os.pathsep):
        try:
            names.update(entry for entry in os.listdir(folder or ".")
                         if os.access(os.path.join(folder or ".", entry), os.X_OK))
        except OSError:
            continue
    close = difflib.get_close_matches(command, sorted(names), n=1, cutoff=0.75) if "/" not in command \
        else []
    if close:
        return (f"your command's program {command!r} is not found on this node; did you mean "
                f"{close[0]!r}? (fix the command after --)")
    return (f"your command's program {command!r} is not found on this node (PATH={search_path}); "
            "check the command after --, or set tsubmit_python to the env that provides it")


def main() -> None:
    request = json.loads(sys.argv[1])
    root = os.path.expanduser(request["remote_root"])
    dry = bool(request.get("dry"))  # Ansible's check mode: look, change nothing
    try:
        if not dry:
            os.makedirs(os.path.join(root, ".archives"), exist_ok=True)
    except OSError as error:
        fail(f"cannot create the remote root {root}: {error.strerror}; set tsubmit_remote_root")
    search_path = os.pathsep.join(filter(None, [request["path_prefix"], os.environ.get("PATH", "")]))
    launcher = request["commands"][0] if len(request["commands"]) > 1 else None
    for command in request["commands"]:
        if shutil.which(command, path=search_path) is None:
            fail(missing_command(command, search_path, launcher))
    if request.get("rank_order") and not dry:
        install_rank_order(os.path.join(root, request["job_id"]))
    container = request.get("container")
    if container:
        if shutil.which(container["engine"], path=search_path) is None:
            fail(f"the container engine {container['engine']} is not installed on this node; "
                 "install it or set tsubmit_container_engine")
        ensure_image(container["engine"], container["image"], container["pull"], dry)
    gpus = gpu_plan(request)
    archive = os.path.join(root, ".archives", f"{request['archive_digest']}.tar.gz")
    print(json.dumps({
        "remote_root": os.path.realpath(root),
        "address": request["address"],
        **gpus,  # gpu_ids, lease, gpus (processes), has_gpus (nvidia-smi lists some)
        "port": free_port(request["head_address"]) if request["head_address"] else None,
        "archive_present": os.path.isfile(archive),
        # Unpacked already: a restart, or nodes sharing a filesystem.
        "tree_present": os.path.isdir(os.path.join(root, request["job_id"], "workdir")),
    }))


main()
