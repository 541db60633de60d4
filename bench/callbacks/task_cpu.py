"""Controller CPU per task of one ansible-playbook run, for the bench only.

Enabled by bench/artifacts.task_cpu_env (ANSIBLE_CALLBACKS_ENABLED=task_cpu),
never by tsubmit. At every task start and at the end it reads getrusage of
ansible-playbook itself (the strategy, templating on the main process, the
callbacks: runner's event files included) and of its reaped children (each
host's forked worker and the ssh clients it ran); the difference between two
boundaries is that task's CPU. A worker that has sent its result may not be
reaped yet, so at each boundary the callback waits (up to 2 s) for the
finished task's workers to exit and reaps them, as multiprocessing does
itself when it starts the next worker: that wait is why this runs only in
untimed submits. Written as JSON to $TSUBMIT_BENCH_TASK_CPU.
"""

import json
import multiprocessing
import os
import resource
import sys
import time

from ansible.plugins.callback import CallbackBase


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_cpu"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._loaded_cpu = _cpu(resource.RUSAGE_SELF)  # Python, Ansible's imports, the config
        self._tasks = []
        self._current = None
        self._mark = None
        self._startup = None

    def _boundary(self):
        deadline = time.monotonic() + 2
        while multiprocessing.active_children() and time.monotonic() < deadline:  # reaps the exited
            time.sleep(0.005)
        now = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        if self._current is not None:
            self._tasks.append({"task": self._current, "main": now[0] - self._mark[0],
                                "workers": now[1] - self._mark[1],
                                "cpu": sum(now) - sum(self._mark)})
        self._mark = now
        return now

    def v2_playbook_on_play_start(self, play):
        if self._startup is None:
            # Everything before the first play: imports, inventory, playbook parsing.
            self._startup = sum(self._boundary())
            self._current = "(play start: the play's hosts and variables)"

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._boundary()
        self._current = task.get_name()

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def v2_playbook_on_stats(self, stats):
        end = sum(self._boundary())
        path = os.environ.get("TSUBMIT_BENCH_TASK_CPU")
        if path:
            with open(path, "w") as out:
                json.dump({"loaded_cpu": self._loaded_cpu, "startup_cpu": self._startup or 0.0,
                           "playbook_cpu": end, "tasks": self._tasks,
                           # Collection plugins ansible-playbook itself imported; any other is
                           # imported (and compiled from source) by every worker that runs it.
                           "main_plugins": sorted(name for name in sys.modules
                                                  if name.startswith("ansible_collections."))}, out)
