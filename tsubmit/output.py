"""Output helpers: tables, JSON, durations, and whether to draw live progress."""

import json
import os
import sys
import time


def interactive(stream=None) -> bool:
    """Live displays and colours only on a terminal, and never with NO_COLOR."""
    stream = stream or sys.stdout
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def to_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def timestamp(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """'1 file', '3 files': COUNT and NOUN as a sentence says them."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def state_phrase(state: str) -> str:
    """A job's or rank's state in a sentence: 'has succeeded', 'has failed', 'is stopped'."""
    return f"has {state}" if state in ("succeeded", "failed") else f"is {state}"
