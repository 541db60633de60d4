"""Per-host progress of a playbook run, driven by ansible-runner events.

On a terminal the table of hosts is redrawn in place; off a terminal (cron,
a pipe) each change is one plain line.
"""

import sys

from .submit import START_TASKS


def _step(kind: str, role: str, task: str) -> str | None:
    """The step a runner event moves a host to, or None when it moves nothing."""
    if kind in ("failed", "unreachable"):
        return kind
    if kind == "ok" and task in START_TASKS:
        return "launched"
    if kind == "start":
        return {"preflight": "connecting", "launch": "launching"}.get(role)
    return None


class Progress:
    def __init__(self, hosts: list[str], *, live: bool, stream=None):
        self.stream = stream or sys.stderr
        self.live = live
        self.steps = {host: "waiting" for host in hosts}
        self.drawn = 0

    def __call__(self, host: str, kind: str, data: dict) -> None:
        if data.get("ignore_errors"):
            return
        step = _step(kind, data.get("role", ""), data.get("task", ""))
        if self.steps.get(host) == "launched" and step not in ("failed", "unreachable"):
            return  # post-launch hooks do not move a launched host back
        if step is None or self.steps.get(host) == step:
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
        for host, step in self.steps.items():
            self.stream.write(f"\x1b[2K  {host.ljust(width)}  {step}\n")
        self.drawn = len(self.steps)
        self.stream.flush()
