"""Run one of tsubmit's playbooks through ansible-runner.

Each run gets a fresh private data dir (stale env files from an earlier run
are a known ansible-runner trap) holding the generated inventory, which adds
the job's hosts, in rank order, to the group `tsubmit_nodes` on top of the
cluster's own inventory, and the extra-vars, written to a 0600 file that is
removed after the run (runner would otherwise put a dict of extra-vars on the
ansible-playbook command line, visible in `ps`).

Job input is data. Every extra-var reaches Ansible marked unsafe with the
YAML `!unsafe` tag (vars_yaml), so no string of a job (its command, name,
environment, hooks, container, study) is ever evaluated as a template, on
the controller or anywhere else; only a value wrapped in Template is. The
generated inventory holds tsubmit's numbers and the addresses read from the
cluster's own inventory, whose templates stay templates as ops teams expect.
"""

import contextlib
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import TsubmitError
from ..interrupts import Interrupted
from ..local.runner_dirs import (
    RUN_OUTCOME_FILE,
    RUN_OWNER_FILE,
    SUCCESSFUL,
    process_identity,
    prune_runs,
    remove_stale_run_secrets,
)
from ..paths import ensure_private_dir, state_dir
from . import ansible_env, progress
from .clusters import ResolvedCluster

NODES_GROUP = "tsubmit_nodes"
# A full disk or quota, in the C library's words (cp, sh) and in the words of
# tsubmit's node scripts, which say it where tar would end with only "Exiting
# with failure status".
FULL_DISK = re.compile(r"No space left on device|Disk quota exceeded")
# What ssh itself adds to a remote command's stderr.
_SSH_NOISE = re.compile(r"^(Shared connection to \S+ closed\.|Connection to \S+ closed\.)$")


class Template(str):
    """An extra-var that Ansible renders as a template (vars_yaml leaves it trusted)."""


class _Marked:
    """A top-level extra-var's value, to be tagged `!unsafe` by _UnsafeDumper."""

    def __init__(self, value):
        self.value = value


class _UnsafeDumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True  # every value written out where it is used, so each carries its own tag

    def increase_indent(self, flow=False, indentless=False):
        # Lists indented under their key, as yamllint (ansible-lint) wants in an exported extravars.yml.
        return super().increase_indent(flow, False)

    def represent_marked(self, marked: _Marked) -> yaml.Node:
        value = marked.value
        if isinstance(value, Template):
            return self.represent_str(str(value))
        if isinstance(value, dict):
            return self.represent_mapping("!unsafe", value)
        if isinstance(value, list | tuple):
            return self.represent_sequence("!unsafe", list(value))
        if isinstance(value, str):
            # Ansible builds a `!unsafe` scalar by reading its text again as a
            # plain scalar, which turns '007' into 7 and 'true' into True. Such
            # a string cannot hold a template delimiter (each starts with "{"),
            # so it goes as a plain string; every other string goes unsafe.
            if self.resolve(yaml.ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str":
                if "{" in value:  # never, with YAML 1.1's implicit types
                    raise ValueError(f"cannot mark {value!r} unsafe")
                return self.represent_str(value)
            return self.represent_scalar("!unsafe", value)
        return self.represent_data(value)  # numbers, booleans, null: never templates


_UnsafeDumper.add_representer(_Marked, _UnsafeDumper.represent_marked)


def vars_yaml(variables: dict) -> str:
    """VARIABLES as a YAML mapping for `-e @FILE`, every value tagged `!unsafe`
    except the Template ones. A mapping or list is tagged once: all it holds,
    its keys too, is then unsafe in Ansible, each value keeping its type."""
    return yaml.dump({name: _Marked(value) for name, value in variables.items()}, Dumper=_UnsafeDumper,
                     sort_keys=False, allow_unicode=True, width=1 << 16)


@dataclass
class HostResult:
    status: str = "pending"  # pending | ok | failed | unreachable
    message: str = ""
    results: dict[str, dict] = field(default_factory=dict)  # task name -> result


@dataclass
class PlaybookRun:
    status: str
    hosts: dict[str, HostResult]
    data_dir: Path

    def failures(self) -> dict[str, str]:
        return {
            host: result.message
            for host, result in self.hosts.items()
            if result.status in ("failed", "unreachable")
        }


def cluster_hosts(cluster: ResolvedCluster, host_vars: dict[str, dict] | None = None) -> dict[str, dict]:
    """The generated variables of each node of a resolved cluster, in rank order."""
    return {
        node.name: {"tsubmit_rank": node.rank, "tsubmit_node_address": node.address,
                    **(host_vars or {}).get(node.name, {})}
        for node in cluster.nodes
    }


def run_playbook(
    name: str,
    sources: list[str],
    hosts: dict[str, dict],
    extravars: dict,
    *,
    on_event: Callable[[str, str, dict], None] | None = None,
    verbose: int = 0,
    vault_password_file: str | None = None,
    check: bool = False,
    skip_tags: Sequence[str] = (),
    cancel: Callable[[], bool] | None = None,
) -> PlaybookRun:
    """Run playbooks/NAME.yml on HOSTS (inventory name -> generated variables),
    found in the inventory SOURCES, without the steps tagged SKIP_TAGS. Never
    raises for host failures."""
    import ansible_runner

    data_dir = _new_data_dir(name)
    inventory_file = data_dir / "inventory" / "tsubmit.yml"
    inventory_file.parent.mkdir()
    inventory_file.write_text(yaml.safe_dump({"all": {"children": {NODES_GROUP: {"hosts": hosts}}}},
                                             sort_keys=False))  # hosts stay in rank order
    extravars_file = data_dir / "env" / "extravars"
    extravars_file.parent.mkdir()
    extravars_file.touch(mode=0o600)
    extravars_file.write_text(vars_yaml(extravars))

    options = ["--check", "--diff"] if check else []
    if skip_tags:
        options += ["--skip-tags", ",".join(skip_tags)]
    if vault_password_file:
        options += ["--vault-password-file", vault_password_file]
    results = {host: HostResult() for host in hosts}
    shown = None if on_event else progress.for_playbook(list(hosts), verbose)
    handler = _EventHandler(results, on_event or shown)
    # A caller that handles signals itself (interrupts.Deferred) says when to cancel.
    signals = _CancelOnSignal() if cancel is None else contextlib.nullcontext()
    try:
        with signals:
            runner = ansible_runner.run(
                private_data_dir=str(data_dir),
                project_dir=str(ansible_env.playbook(name).parent),
                playbook=ansible_env.playbook(name).name,
                inventory=[*sources, str(inventory_file)],
                envvars=ansible_env.environment(),
                forks=max(len(hosts), 1),
                quiet=verbose == 0,
                verbosity=max(verbose - 1, 0) or None,
                event_handler=handler,
                cmdline=shlex.join(options) if options else None,
                cancel_callback=cancel or signals.requested,
            )
    finally:
        if shown:
            shown.clear()
        extravars_file.unlink(missing_ok=True)
        # runner's record of the command carries the whole environment of
        # this process, which may hold a user's credentials.
        for command_file in data_dir.glob("artifacts/*/command"):
            command_file.unlink()
    failed = [host for host, result in results.items() if result.status in ("failed", "unreachable")]
    outcome = runner.status if runner.status != SUCCESSFUL else "failed" if failed else SUCCESSFUL
    (data_dir / RUN_OUTCOME_FILE).write_text(outcome)
    if runner.status == "canceled":
        if cancel is None:  # the signal itself, once runner ended the play: callers' waits handle it
            raise KeyboardInterrupt
        raise Interrupted("interrupted")
    for result in results.values():
        if result.status == "pending":
            result.status = "ok"
    return PlaybookRun(runner.status, results, data_dir)


def _new_data_dir(name: str) -> Path:
    runs = ensure_private_dir(state_dir() / "runs")
    remove_stale_run_secrets()
    prune_runs()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        path = runs / f"{stamp}-{name}-{attempt}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        (path / RUN_OWNER_FILE).write_text(process_identity(os.getpid()))
        return path
    raise TsubmitError(f"cannot create a run directory under {runs}")


class _EventHandler:
    """Turns runner events into per-host outcomes and progress callbacks."""

    def __init__(self, hosts: dict[str, HostResult], on_event):
        self.hosts = hosts
        self.on_event = on_event

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        host = data.get("host")
        result = self.hosts.get(host)
        if result is None:
            return True
        res = data.get("res") or {}
        if kind == "runner_on_ok":
            result.results[data.get("task", "")] = res
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            result.status, result.message = "failed", failure_message(res)
        elif kind == "runner_on_unreachable":
            result.status, result.message = "unreachable", failure_message(res)
        if self.on_event and kind.startswith("runner_on_"):
            self.on_event(host, kind.removeprefix("runner_on_"), data)
        return True


def failure_message(res: dict) -> str:
    """The most telling line of a failed task's result: a full disk's (FULL_DISK),
    wherever it is, else the last line of the first output that has one."""
    outputs = {
        key: [line.strip() for line in str(res.get(key) or "").splitlines()
              if line.strip() and not _SSH_NOISE.match(line.strip())]
        for key in ("stderr", "msg", "stdout", "module_stderr")
    }
    full = next((line for lines in outputs.values() for line in lines if FULL_DISK.search(line)), None)
    if full:
        return full
    for key, lines in outputs.items():
        if lines and lines != ["non-zero return code"]:
            message = lines[-1] if key != "msg" else " ".join(lines)
            return _with_next_step(message.removeprefix("Task failed: "))  # ansible-core 2.19's wording
    return "failed"


def _with_next_step(message: str) -> str:
    from .ssh_hints import with_next_step  # what to run next after an ssh failure (issue 16)

    return with_next_step(message)


class _CancelOnSignal:
    """Ctrl-C or SIGTERM asks runner to cancel; the previous handlers come back after."""

    def __init__(self):
        self._event = threading.Event()
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self._event.is_set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, lambda *_: self._event.set())
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False
