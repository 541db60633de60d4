"""Per-host progress of a playbook run, driven by ansible-runner events.

On a terminal the table of hosts is redrawn in place; off a terminal (cron,
a pipe) `run` writes each change as one plain line and the other verbs write
nothing (their output is the answer, and scripts read it).
"""

import contextlib
import shutil
import sys
import threading


def _step(kind: str, role: str, task: str, start_tasks: tuple[str, ...]) -> str | None:
    """The step a runner event moves a host to in `run`, or None when it moves nothing."""
    if kind in ("failed", "unreachable"):
        return kind
    if kind == "ok" and task in start_tasks:
        return "launched"
    if kind == "start":
        return {"preflight": "connecting", "launch": "launching"}.get(role)
    return None


class _HostTable:
    """One line per host, redrawn in place on a terminal, else one line per change."""

    def __init__(self, hosts: list[str], first: str, *, live: bool, stream=None):
        self.stream = stream or sys.stderr
        self.live = live
        self.steps = dict.fromkeys(hosts, first)
        self.drawn = 0

    def set(self, host: str, step: str) -> None:
        if host not in self.steps or self.steps[host] == step:
            return
        self.steps[host] = step
        if self.live:
            self._redraw()
        else:
            print(f"{host}: {step}", file=self.stream, flush=True)

    def _redraw(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F")
        width = max(len(host) for host in self.steps)
        room = max(shutil.get_terminal_size().columns - width - 5, 10)
        for host, step in self.steps.items():
            self.stream.write(f"\x1b[2K  {host.ljust(width)}  {step[:room]}\n")
        self.drawn = len(self.steps)
        self.stream.flush()

    def clear(self) -> None:
        """Remove the table, so that what the verb prints next stands alone."""
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[0J")
            self.stream.flush()
            self.drawn = 0


class Progress(_HostTable):
    """`run`'s progress: connecting, launching, launched (once one of START_TASKS,
    submit.START_TASKS, is done) or failed, per host."""

    def __init__(self, hosts: list[str], start_tasks: tuple[str, ...], *, live: bool, stream=None):
        super().__init__(hosts, "waiting", live=live, stream=stream)
        self.start_tasks = start_tasks

    def __call__(self, host: str, kind: str, data: dict) -> None:
        if data.get("ignore_errors"):
            return
        step = _step(kind, data.get("role", ""), data.get("task", ""), self.start_tasks)
        if self.steps.get(host) == "launched" and step not in ("failed", "unreachable"):
            return  # post-launch hooks do not move a launched host back
        if step is not None:
            self.set(host, step)


class TaskProgress(_HostTable):
    """Any other verb's progress on a terminal: the task each host is at, while
    the playbook runs (cluster check, status, stop, delete, list...); removed
    once it has ended."""

    def __init__(self, hosts: list[str], stream=None):
        super().__init__(hosts, "connecting", live=True, stream=stream)
        self._redraw()

    def __call__(self, host: str, kind: str, data: dict) -> None:
        if kind in ("failed", "unreachable") and not data.get("ignore_errors"):
            self.set(host, kind)
        elif kind == "start" and self.steps.get(host) not in ("failed", "unreachable"):
            self.set(host, data.get("task") or "working")


# Whether a playbook run shows TaskProgress: the command line turns it on for
# every verb (cli._Group); a wait's polling turns it off (a table every few
# seconds would bury what the wait prints).
_shown = False


@contextlib.contextmanager
def shown(on: bool = True):
    global _shown
    before, _shown = _shown, on
    try:
        yield
    finally:
        _shown = before


def for_playbook(hosts: list[str], verbose: int) -> TaskProgress | None:
    """The progress of a playbook run that has none of its own: on a terminal
    only, not while Ansible itself talks (-v), and from the main thread alone
    (two tables drawn at once would garble each other)."""
    from ..output import interactive

    if (not _shown or verbose or not hosts or threading.current_thread() is not threading.main_thread()
            or not interactive(sys.stderr)):
        return None
    return TaskProgress(hosts)
