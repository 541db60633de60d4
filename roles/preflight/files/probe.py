"""Probe a node: print one JSON line of what it found. The one node probe of
`tsubmit run` (role preflight) and `tsubmit cluster check` (role check), run
through tsubmit.cluster.probe (plugins/action/probe.py) in one SSH execution.

Usage: probe.py REQUEST_JSON. Keys of every request: remote_root, path_prefix
(the folders put first on the job's PATH). A request with `check` (python,
torchrun, container_engine, module_python) gathers what `cluster check`
judges on the controller (tsubmit/nodes/cluster_check.py) and fails nothing;
without it, the preflight's keys (plugin_utils/launch_contract.py's
probe_request): address (the node's rendezvous address, reported back),
head_address (empty unless this node is the head), nproc (processes per node
on a node without GPUs; 0: 1), gpus_declared (the host's tsubmit_gpus, 0 if
unset), gpus_wanted (the job's --gpus: null for all of the node's GPUs, 0 for
none), archive_digest, job_id, commands (each must be found on the job's
PATH), container (null, or {engine, image, pull}), rank_order (true for
torchrun: put rank_order.py, sent beside this script, in <job dir>/tsubmit-lib/
as sitecustomize.py), and dry (Ansible's check mode: create and pull nothing).
The preflight fails the host with one line a user can act on.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

# gpu_lease.py, sent beside this script: one home for how a node's GPUs are found.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_lease import nvidia_gpus

# ansible-core's INTERPRETER_PYTHON_FALLBACK: what its discovery picks on the login PATH.
DISCOVERY = ("python3.13", "python3.12", "python3.11", "python3.10", "python3.9", "python3.8",
             "/usr/bin/python3", "python3")


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def output(command: list[str], line: int = -1) -> tuple[bool, str]:
    """Whether COMMAND ran and succeeded, and its LINEth non-empty line of output."""
    try:
        ran = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    return ran.returncode == 0, ([text.strip() for text in ran.stdout.splitlines() if text.strip()]
                                 or [""])[line]


def gpu_plan(request: dict) -> dict:
    """The node's GPU ids, how many the job leases here and how many processes
    it runs. A node with nothing to lease runs nproc processes (1 when 0)."""
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


def preflight(request: dict, root: str, search_path: str) -> dict:
    dry = bool(request.get("dry"))  # Ansible's check mode: look, change nothing
    try:
        if not dry:
            os.makedirs(os.path.join(root, ".archives"), exist_ok=True)
    except OSError as error:
        fail(f"cannot create the remote root {root}: {error.strerror}; set tsubmit_remote_root")
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
    archive = os.path.join(root, ".archives", f"{request['archive_digest']}.tar.gz")
    return {
        "remote_root": os.path.realpath(root),
        "address": request["address"],
        **gpu_plan(request),  # gpu_ids, lease, gpus (processes), has_gpus (nvidia-smi lists some)
        "port": free_port(request["head_address"]) if request["head_address"] else None,
        "archive_present": os.path.isfile(archive),
        # Unpacked already: a restart, or nodes sharing a filesystem.
        "tree_present": os.path.isdir(os.path.join(root, request["job_id"], "workdir")),
    }


def check(request: dict, root: str, search_path: str) -> dict:
    """What `cluster check` judges, on the job's PATH; torch is imported here
    only, by torchrun's own interpreter in a process of its own."""
    asked = request["check"]
    declared = asked["module_python"] not in ("", "auto", "auto_legacy", "auto_silent", "auto_legacy_silent")
    # Ansible's modules: declared, else what its discovery picks on the login PATH.
    module_python = os.path.expanduser(asked["module_python"]) if declared else next(
        filter(None, (shutil.which(name) for name in DISCOVERY)), "")
    module_runs, module_said = output([module_python, "-c", "import sys"], 0)
    os.environ["PATH"] = search_path
    torchrun = shutil.which(asked["torchrun"]) or ""  # as the job runs it: no ~ expanded
    # sys.argv[2]: the node's python did not run (this is another): what it said.
    python = {"found": len(sys.argv) < 3, "path": "", "version": "", "error": "".join(sys.argv[2:])}
    if python["found"]:
        python.update(path=sys.executable, version=".".join(map(str, sys.version_info[:3])))
    torch = {"version": "", "python": interpreter(torchrun) or python["path"], "error": ""}
    if torch["python"]:
        imported, said = output([torch["python"], "-c", "import torch; print(torch.__version__)"])
        if imported:
            torch["version"] = said
        else:
            torch["error"] = f"{torch['python']} cannot import torch: {said}"
    smi = shutil.which("nvidia-smi") or ""
    gpu_ids = nvidia_gpus() if smi else []
    listed, smi_said = output([smi, "--list-gpus"]) if smi and not gpu_ids else (True, "")
    disk = {"root": root, "free_kb": None, "error": ""}
    try:
        os.makedirs(root, exist_ok=True)
        disk["root"] = os.path.realpath(root)
        space = os.statvfs(disk["root"])
        disk["free_kb"] = space.f_bavail * space.f_frsize // 1024
    except OSError as error:
        disk["error"] = f"cannot create {root}: {error.strerror}"
    engine = asked["container_engine"]
    engine_path = shutil.which(os.path.expanduser(engine)) or "" if engine else ""
    return {
        "python": python,
        "torchrun": {"found": bool(torchrun), "path": torchrun,
                     "error": "" if torchrun else f"{asked['torchrun']} not found"},
        "torch": torch,
        "gpus": {"nvidia_smi": smi, "count": len(gpu_ids) if smi and listed else None,
                 "error": "" if listed else f"nvidia-smi failed: {smi_said}"},
        "disk": disk,
        "container": {"engine": engine, "found": bool(engine_path), "path": engine_path,
                      "version": engine_path and output([engine_path, "--version"], 0)[1]},
        "module_python": {"declared": declared, "path": module_python, "error": "" if module_runs else
                          f"{module_python} does not run: {module_said}" if module_python else
                          "no python found"},
        "search_path": search_path,
        "time": time.time(),  # last, closest to the moment the controller receives the result
    }


def interpreter(program: str) -> str:
    """The python PROGRAM's #! line names, if it names an executable one."""
    try:
        with open(program, "rb") as script:
            words = script.readline().decode(errors="replace").removeprefix("#!").split()
    except OSError:
        return ""
    found = words and os.path.basename(words[0]).startswith("python") and os.access(words[0], os.X_OK)
    return words[0] if found else ""


def main() -> None:
    request = json.loads(sys.argv[1])
    root = os.path.expanduser(request["remote_root"])
    prefix = [os.path.expanduser(folder) for folder in request["path_prefix"].split(os.pathsep) if folder]
    search_path = os.pathsep.join(filter(None, [*prefix, os.environ.get("PATH")]))
    print(json.dumps((check if "check" in request else preflight)(request, root, search_path)))


main()
