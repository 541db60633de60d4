"""What the Optuna store tests share: the role driven on the harness nodes, and the workers.

test_optuna_store.py (the head-node store) and test_optuna_store_postgres.py (an external
PostgreSQL) both drive the optuna_store role directly: a small playbook that stands in
for submit.yml (a fake preflight_nodes fact, then `role: optuna_store`) runs through
tsubmit's own ansible-runner wrapper, and the workers are the example search run over
real ssh on other nodes with the environment the launch role gives them. The
maintenance steps run through the playbooks tsubmit ships. The fixtures `home` and
`cluster` live here; a test file imports them by name (pytest finds fixtures among a
module's names).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tsubmit.model import layout
from tsubmit.model.job import Job, Rank
from tsubmit.nodes import ansible_env
from tsubmit.nodes.ansible_run import run_playbook

from .waiting import eventually

REPO = Path(__file__).resolve().parents[2]
ROLE_FILES = REPO / "roles" / "optuna_store" / "files"
EXAMPLE = REPO / "examples" / "optuna" / "search.py"
START_TASK = "Start the store and create the study"
ENDPOINT_TASK = "Read the endpoint as the launch role would"

# The test stand-in for playbooks/submit.yml (preflight and launch replaced by
# a fact and a folder), and the maintenance playbooks tsubmit ships.
PLAYBOOKS = {
    "optuna_store_test": [{
        "name": "Start an Optuna store as the submit playbook does",
        "hosts": "tsubmit_nodes",
        "gather_facts": False,
        "any_errors_fatal": True,
        "pre_tasks": [
            {"name": "Stand in for the preflight role",
             "ansible.builtin.set_fact": {"preflight_nodes": (
                 "{{ {inventory_hostname: {'remote_root': tsubmit_remote_root, 'gpus': 1,"
                 " 'port': none}} }}")}},
            {"name": "Create the job's folder as the launch role would",
             "ansible.builtin.file": {"path": "{{ tsubmit_remote_root }}/{{ tsubmit_job_id }}",
                                      "state": "directory", "mode": "0755"}},
        ],
        "roles": [{"role": "optuna_store"}],
        "tasks": [
            {"name": ENDPOINT_TASK,
             "ansible.builtin.debug": {"msg": (
                 "{{ hostvars[tsubmit_job_nodes[0]].optuna_store_endpoint | dict2items"
                 " | rejectattr('key', 'eq', 'storage_url') | items2dict | combine({'has_storage_url':"
                 " hostvars[tsubmit_job_nodes[0]].optuna_store_endpoint.storage_url is not none}) }}")}},
        ],
    }],
    **{f"test_optuna_{entry}": [{
        "name": f"Optuna store: {entry}",
        "hosts": "tsubmit_nodes",
        "gather_facts": False,
        "tasks": [{"name": f"Run the optuna_store role's {entry} tasks",
                   "ansible.builtin.include_role": {"name": "optuna_store", "tasks_from": entry}}],
    }] for entry in ("check",)},
}


@pytest.fixture
def home(tmp_path_factory, monkeypatch):
    """An isolated TSUBMIT_HOME, and tsubmit's playbook lookup extended with the test's."""
    folder = Path(tempfile.mkdtemp(prefix="tso-", dir="/tmp"))
    playbooks = folder / "playbooks"
    playbooks.mkdir()
    for name, content in PLAYBOOKS.items():
        (playbooks / f"{name}.yml").write_text(yaml.safe_dump(content, sort_keys=False))
    original = ansible_env.playbook
    monkeypatch.setenv("TSUBMIT_HOME", str(folder))
    monkeypatch.setattr(ansible_env, "playbook",
                        lambda name: playbooks / f"{name}.yml" if name in PLAYBOOKS else original(name))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Cluster:
    """The harness nodes as one inventory, and jobs started on them."""

    def __init__(self, nodes, home: Path):
        self.nodes = nodes
        self.home = home
        self.inventory = home / "inventory.yml"
        nodes.write_inventory(self.inventory)
        self.started: list[tuple[str, list]] = []

    def job(self, job_id: str, members) -> Job:
        return Job(id=job_id, name=job_id, cluster="test", inventory={"sources": [str(self.inventory)]},
                   executor="optuna", command=["python", "search.py"], workdir=str(REPO),
                   ranks=[Rank(rank, node.name, node.address) for rank, node in enumerate(members)])

    def start(self, members, *, study: str, job_id: str | None = None, direction: str = "minimize",
              storage: str | None = None, dashboard: bool = False, attempt: int = 1, **role_vars):
        """Run the role for a new job on MEMBERS (head first); (job id, run, endpoint or None)."""
        job_id = job_id or secrets.token_hex(5)
        hosts = {node.name: {"tsubmit_rank": rank, "tsubmit_node_address": node.address, **role_vars}
                 for rank, node in enumerate(members)}
        run = run_playbook("optuna_store_test", [str(self.inventory)], hosts, {
            "tsubmit_job_id": job_id, "tsubmit_job_name": f"job-{job_id}",
            "tsubmit_job_nodes": [node.name for node in members], "tsubmit_job_attempt": attempt,
            "tsubmit_job_optuna": {"study": study, "direction": direction, "storage": storage,
                                   "dashboard": dashboard},
        })
        self.started.append((job_id, list(members)))
        endpoint = None
        if not run.failures():
            endpoint = json.loads(run.hosts[members[0].name].results[START_TASK]["stdout"])
            # every node reads the head's fact, as the launch template does
            for node in members:
                seen = run.hosts[node.name].results[ENDPOINT_TASK]["msg"]
                assert seen == {"host": endpoint["host"], "port": endpoint["port"], "study": study,
                                "dashboard_port": endpoint["dashboard_port"],
                                "has_storage_url": storage is not None}
        return job_id, run, endpoint

    def run_entry(self, job_id: str, members, playbook: str, **extravars):
        hosts = {node.name: {"tsubmit_rank": rank} for rank, node in enumerate(members)}
        return run_playbook(playbook, [str(self.inventory)], hosts, {"tsubmit_job_id": job_id, **extravars})

    def stop(self, job_id: str, members):
        run = self.run_entry(job_id, members, "stop", tsubmit_job_executor="optuna")
        assert not run.failures(), run.failures()
        return run

    def store_dir(self, job_id: str, head) -> Path:
        return head.remote_root / job_id / "optuna"

    def cleanup(self) -> None:
        for job_id, members in self.started:
            if store_processes(self.nodes, members[0], job_id):
                with contextlib.suppress(Exception):
                    self.run_entry(job_id, members[:1], "stop", tsubmit_job_executor="optuna")


@pytest.fixture
def cluster(nodes, home):
    made = Cluster(nodes, home)
    yield made
    made.cleanup()


# --------------------------------------------------------------------------- helpers


def unique_study(prefix: str = "study") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def helper_modules() -> list[Path]:
    """The worker helper and what it imports beside itself (Optuna's private gRPC API), as
    the launch ships them (layout.OPTUNA_HELPERS; sitecustomize.py works only from the
    PYTHONPATH the launch sets, so a worker started here goes without it)."""
    return [ROLE_FILES / name for name in layout.OPTUNA_HELPERS if name != "sitecustomize.py"]


def place_helpers(node, job_id: str) -> Path:
    """The helper modules in the job's optuna-lib/ on NODE, where the launch puts them (its
    shipping is tested by test_optuna_run and test_launch_contract); readable by the test user."""
    lib = node.remote_root / job_id / "optuna-lib"
    lib.mkdir(parents=True, exist_ok=True)
    for module in helper_modules():
        shutil.copy(module, lib / module.name)
    for path in (node.remote_root / job_id, lib):
        path.chmod(0o755)
    return lib


def worker_dir(node, job_id: str, *, helper: bool = True) -> Path:
    """The job's tree on a node: the example (and the helper modules), readable by the test user."""
    folder = node.remote_root / job_id / "workdir"
    folder.mkdir(parents=True, exist_ok=True)
    for source in (EXAMPLE, *helper_modules()) if helper else (EXAMPLE,):
        shutil.copy(source, folder / source.name)
    for path in (node.remote_root / job_id, folder):
        path.chmod(0o755)
    return folder


def worker_env(endpoint: dict, job_id: str, rank: int, storage: str | None = None) -> dict[str, str]:
    """What the launch role exports to an Optuna worker."""
    env = {"STUDY_NAME": endpoint["study"], "OPTUNA_STUDY_NAME": endpoint["study"],
           "TSUBMIT_JOB_ID": job_id, "NODE_RANK": str(rank), "WORLD_SIZE": "1",
           "MASTER_ADDR": "localhost", "OMP_NUM_THREADS": "1"}
    if storage:
        env.update(DATABASE_URI=storage, OPTUNA_STORAGE=storage)
    else:
        env.update(DATABASE_URI=f"grpc://{endpoint['host']}:{endpoint['port']}",
                   TSUBMIT_OPTUNA_GRPC_HOST=endpoint["host"],
                   TSUBMIT_OPTUNA_GRPC_PORT=str(endpoint["port"]))
    return env


def worker_command(nodes, node, job_id: str, env: dict[str, str], trials: int, *, script: str = "search.py",
                   pythonpath: str = ".") -> str:
    """The worker's command; its environment comes from a private file, as the launch
    script exports it, never on a command line (it may hold a database password)."""
    folder = worker_dir(node, job_id, helper=pythonpath == ".")
    env_file = folder / f"worker-{secrets.token_hex(4)}.env"
    env_file.write_text("".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items()))
    env_file.chmod(0o600)
    os.chown(env_file, pwd.getpwnam(node.user).pw_uid, -1)
    return (f"cd {shlex.quote(str(folder))} && . {shlex.quote(str(env_file))} && "
            f"PYTHONPATH={shlex.quote(pythonpath)} "
            f"exec {shlex.quote(nodes.python)} {script} {trials}")


def run_worker(nodes, node, job_id: str, env: dict[str, str], trials: int, timeout: float = 240,
               pythonpath: str = "."):
    command = worker_command(nodes, node, job_id, env, trials, pythonpath=pythonpath)
    result = nodes.ssh(node, command, check=False, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def python_on(nodes, node, code: str, env: dict[str, str] | None = None, timeout: float = 60,
              job_id: str | None = None) -> str:
    """Run Python code on the node as the test user (so SQLite's -wal/-shm files stay the
    store's), with ENV from a private file and the job's tree on PYTHONPATH."""
    folder = worker_dir(node, job_id) if job_id else node.remote_root
    script = folder / f"snippet-{secrets.token_hex(4)}.py"
    script.write_text(code)
    script.chmod(0o644)
    command = f"{shlex.quote(nodes.python)} {shlex.quote(str(script))}"
    if env or job_id:
        command = worker_command(nodes, node, job_id or "scratch", env or {}, 0,
                                 script=shlex.quote(str(script))).rsplit(" ", 1)[0]
    result = nodes.ssh(node, command, check=False, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def trials_in_file(nodes, head, study_file: str, study: str) -> list[dict]:
    """The study's trials, read from the SQLite file itself on the head."""
    code = f"""
import json, sqlite3
db = sqlite3.connect({study_file!r}, timeout=30)
rows = db.execute("SELECT t.trial_id, t.number, t.state FROM trials t JOIN studies s "
                  "ON s.study_id = t.study_id WHERE s.study_name = ?", ({study!r},)).fetchall()
attrs = dict(db.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'node'"))
print(json.dumps([{{"number": n, "state": s, "node": json.loads(attrs[i]) if i in attrs else None}}
                  for i, n, s in rows]))
"""
    return json.loads(python_on(nodes, head, code))


def listener_address(port: int) -> str | None:
    """The address a LISTEN socket on PORT is bound to (/proc/net/tcp and tcp6; gRPC
    listens on an IPv4-mapped IPv6 socket, ::ffff:A.B.C.D, for an IPv4 address)."""
    for table_name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table_name) as table:
            next(table)
            for fields in (line.split() for line in table):
                address, _, hex_port = fields[1].partition(":")
                if fields[3] != "0A" or int(hex_port, 16) != port:
                    continue
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    return socket.inet_ntoa(raw[::-1] if sys.byteorder == "little" else raw)
                # /proc prints IPv6 as four host-order 32-bit words
                words = b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4]
                                 for i in range(0, 16, 4))
                text = socket.inet_ntop(socket.AF_INET6, words)
                return text.removeprefix("::ffff:")
    return None


def store_processes(nodes, head, job_id: str) -> list[str]:
    """The store's processes on the head: each store or dashboard, and the shell that keeps it up."""
    return [cmd for cmd in nodes.processes_of(head, r"optuna_store\.py") if f"/{job_id}/" in cmd]


def store_log(store: Path, name: str = "store", attempt: int = 1) -> Path:
    """The log of the store's process NAME (its folder is laid out as a rank's attempt)."""
    return store / name / f"attempt-{attempt}" / "output.log"


def watchdog_saw(store: Path, line: str, timeout: float = 30) -> None:
    """Wait until the store logged LINE: it then judged the ranks' files
    as the test left them, so a store still running afterwards stayed up on purpose."""
    eventually(lambda: line in store_log(store).read_text(), timeout=timeout,
               message=f"the store logging {line!r}")


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def failure_line(run, host: str) -> str:
    message = run.failures()[host]
    assert "\n" not in message and "Traceback" not in message, message
    return message


