"""What every part of a job's Optuna store uses: its folder and store.json, the
one-line errors, private files, and the address and port checks.

Standard library only (Optuna is imported by store_optuna.py alone).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time

STORE_FILE = "store.json"
STUDY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
EXIT_BUSY = 3


class StoreError(Exception):
    """A problem for the user: printed as one line, the script exits 1."""


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def last_error(log_path: str) -> str:
    """The last ERROR of a store process's log (else its last line)."""
    lines = [line.strip() for line in (read_text(log_path) or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR " in line:
            return line.split("ERROR ", 1)[1]
    return lines[-1] if lines else "no output"


def write_private(path: str, text: str) -> None:
    """Write a file atomically, mode 0600."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def boot_id() -> str:
    return (read_text("/proc/sys/kernel/random/boot_id") or "").strip()


# --------------------------------------------------------------------------- the store's folder


def optuna_dir(job_dir: str) -> str:
    return os.path.join(os.path.expanduser(job_dir), "optuna")


def read_config(folder: str) -> dict:
    """The store.json of the store in FOLDER, which a daemon is started for."""
    with open(os.path.join(folder, STORE_FILE)) as handle:
        return json.load(handle)


def load_config(job_dir: str) -> dict | None:
    """The store.json of the job in JOB_DIR; None when the job has no store here."""
    try:
        return read_config(optuna_dir(job_dir))
    except FileNotFoundError:
        return None


def save_config(config: dict) -> None:
    write_private(os.path.join(config["dir"], STORE_FILE), json.dumps(config, indent=1) + "\n")


def ready_file(folder: str, name: str) -> str:
    """The file the server or the dashboard (NAME) of the store in FOLDER writes once
    it listens, which its starter waits for."""
    return os.path.join(folder, f"{name}.ready")


def mark_ready(folder: str, name: str, port: int) -> None:
    write_private(ready_file(folder, name), f"{os.getpid()} {port}\n")


def need_config(options: dict) -> dict:
    config = load_config(options["job_dir"])
    if config is None:
        raise StoreError(f"no Optuna store for this job on this node ({optuna_dir(options['job_dir'])} "
                         "is missing): not an optuna job, or its folder was removed")
    return config


def script_copy(folder: str) -> str:
    """The store's scripts, kept in the job's folder: the detached processes outlive
    the copy the Ansible task brought (every module beside this one); the path of
    the entry script there."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here != os.path.abspath(folder):
        for source in glob.glob(os.path.join(here, "*.py")):
            target = os.path.join(folder, os.path.basename(source))
            shutil.copyfile(source, target + ".tmp")
            os.chmod(target + ".tmp", 0o600)
            os.replace(target + ".tmp", target)
    return os.path.join(folder, "optuna_store.py")


def read_url(url_file: str) -> str:
    url = (read_text(url_file) or "").strip()
    if not url:
        raise StoreError(f"the external storage URL file {url_file} is missing or empty")
    return url


def url_or_none(config: dict) -> str | None:
    """The external storage URL of CONFIG, to scrub from messages; None for the head store."""
    if config.get("kind") != "external":
        return None
    try:
        return read_url(config["url_file"])
    except StoreError:
        return None


def study_key(study: str) -> str:
    """The study's file name: the name itself when it is a safe file name."""
    if STUDY_KEY.match(study):
        return study
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study).strip("._-")[:60] or "study"
    return f"{safe}-{hashlib.sha256(study.encode()).hexdigest()[:10]}"


# --------------------------------------------------------------------------- addresses and ports


def free_port(address: str) -> int:
    family = socket.getaddrinfo(address, None)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def bind_problem(address: str, port: int) -> str | None:
    """Why ADDRESS:PORT cannot be listened on (a plain bind without SO_REUSEPORT), or None."""
    try:
        family = socket.getaddrinfo(address, None)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
            probe.listen(1)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return f"port {port} on {address} is already in use by another process"
        if error.errno == errno.EADDRNOTAVAIL:
            return (f"{address} is not an address of this node; set tsubmit_rdzv_address "
                    "(or optuna_store_address) to one of its addresses")
        return f"cannot listen on {address}:{port}: {error.strerror or error}"
    return None


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def grpc_target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
