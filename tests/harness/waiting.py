"""How a test waits: for a condition, never for a time.

``eventually`` polls a condition until it holds and fails the test naming what
was awaited when it does not in time; the timeout is a bound on a slow, shared
machine, not a duration the test relies on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

SHOWN_CHARS = 4000


def eventually(condition: Callable[[], T], *, message: str, timeout: float = 60,
               interval: float = 0.2, detail: Callable[[], object] | None = None) -> T:
    """Poll CONDITION every INTERVAL seconds until it returns a true value, and return that value.

    After TIMEOUT seconds the test fails with "timed out after Ns waiting for: MESSAGE", the
    condition's last value when it is not a bare False or None, and DETAIL's answer (what to
    read to understand why: a log, a process's output), called only then. An exception the
    condition raises ends the wait at once: raise (or assert) in it to give up early, e.g.
    when the process that should make it true has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(message, timeout, value, detail))
        time.sleep(interval)


def _failure(message: str, timeout: float, value: object,
             detail: Callable[[], object] | None) -> str:
    text = f"timed out after {timeout:g}s waiting for: {message}"
    if value is not None and value is not False:
        text += f"\nlast seen: {_shown(value)}"
    if detail is not None:
        try:
            text += f"\n{_shown(detail())}"
        except Exception as exc:  # what failed first matters more than the detail
            text += f"\n(no detail: {exc!r})"
    return text


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN_CHARS else "..." + text[-SHOWN_CHARS:]
