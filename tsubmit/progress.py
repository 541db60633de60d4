"""Per-host progress of a playbook run, driven by ansible-runner events.

On a terminal the table of hosts is redrawn in place; off a terminal (cron,
a pipe) each change is one plain line.
"""

import sys

# Which step a host is in, by the task it starts; tasks not listed keep the step.
_STEPS = {
    "Probe the node (remote root, launcher, GPUs, rendezvous port on the head)": "connecting",
    "Unpack the archive into the job directory": "unpacking",
    "Render the rank's launch script": "launching",
}
_DONE_TASK = "Start the rank detached"


class Progress:
    def __init__(self, hosts: list[str], *, live: bool, stream=None):
        self.stream = stream or sys.stderr
        self.live = live
        self.steps = {host: "waiting" for host in hosts}
        self.drawn = 0

    def __call__(self, host: str, kind: str, data: dict) -> None:
        task = data.get("task", "")
        if kind == "start" and task in _STEPS:
            step = _STEPS[task]
        elif kind == "ok" and task == _DONE_TASK:
            step = "launched"
        elif task == "Ship the archive" and kind in ("ok", "skipped"):
            step = "shipped" if kind == "ok" else "already on the node"
        elif kind in ("failed", "unreachable") and not data.get("ignore_errors"):
            step = "unreachable" if kind == "unreachable" else "failed"
        else:
            return
        if self.steps.get(host) == step:
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
