"""Ctrl-C and SIGTERM: one interrupt, exit 130 (the exit-code table's promise).

From tsubmit's first line on, SIGTERM raises KeyboardInterrupt as Ctrl-C does
(interrupt_on_signals), so a wait, a queue or a load of tsubmit's modules that
is interrupted ends with a message and 130, never silently by the signal.

Killing the submit playbook at once would leave nodes half done: a node whose
ssh command was already sent goes on and starts its rank after tsubmit has
exited. So the first signal is only remembered (and said), the play runs to
its end on every node, and the caller then rolls back everything that
started. A second signal cancels the play at once (ansible-runner kills it);
the rollback still runs, over whatever had been reached.
"""

import signal
import sys
import threading

from .errors import EXIT_INTERRUPTED, TsubmitError


class Interrupted(TsubmitError):
    exit_code = EXIT_INTERRUPTED


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def exit_interrupted() -> None:
    print("tsubmit: interrupted", file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)


class Deferred:
    """Context manager: SIGINT and SIGTERM are counted instead of raised."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "Deferred":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, *_) -> None:
        self.count += 1
        if self.count == 1:
            print(f"tsubmit: interrupted; {self.what} (interrupt again to cancel at once)",
                  file=sys.stderr, flush=True)

    def __bool__(self) -> bool:
        return self.count > 0

    def forced(self) -> bool:
        """ansible-runner's cancel callback: only a second signal cancels the play."""
        return self.count > 1
