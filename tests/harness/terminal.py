"""tsubmit run on a real terminal (a pty), as a user at a keyboard runs it."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

from .jobs import TSUBMIT

REPO = Path(__file__).resolve().parents[2]


def on_a_terminal(cli, *args: str, env: dict[str, str] | None = None, typed: bytes = b"",
                  timeout: float = 120) -> tuple[int, str]:
    """Run `tsubmit ARGS` as CLI (in ENV if given) with a pty as its controlling terminal, stdin,
    stdout and stderr, TYPED written to it first; (exit code, everything the terminal showed).
    Killed if it runs past TIMEOUT."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*TSUBMIT, *args], env=env or cli.env, cwd=REPO, stdin=terminal,
                               stdout=terminal, stderr=terminal, start_new_session=True,
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(terminal)
    shown = []
    deadline = time.monotonic() + timeout
    try:
        if typed:
            os.write(controller, typed)
        # Read until the terminal closes: EIO once tsubmit, its last user, has ended.
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if not ready:
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:
                break
            if not data:
                break
            shown.append(data)
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return process.returncode, b"".join(shown).decode(errors="replace")
