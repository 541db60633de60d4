"""This user's real crontab, held by one test at a time and always given back.

The cron tests write the real crontab (tsubmit edits it with `crontab -`). A
pytest killed while it held it (SIGKILL, a CI timeout) used to leave the tests'
entries there, `tsubmit cron exec` lines of homes already removed. So the
holder first writes the crontab it found to a journal beside the lock; it
restores that and removes the journal when it lets go, also on SIGTERM. A
journal found on taking the lock was left by a holder that died (the lock is
free only once its process is gone): the crontab is put back as that journal
says before anything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The journal's first line: the crontab was absent, or its text follows.
ABSENT, PRESENT = "absent\n", "present\n"


def lock_path() -> Path:
    return Path(tempfile.gettempdir()) / f"tsubmit-tests-crontab-{os.getuid()}.lock"


def journal_path() -> Path:
    return lock_path().with_suffix(".saved")


def read() -> str | None:
    """`crontab -l`, or None when this user has no crontab."""
    listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    if listed.returncode != 0:
        assert "no crontab" in listed.stderr.lower(), listed.stderr
        return None
    return listed.stdout


def write(text: str | None) -> None:
    if text is None:
        subprocess.run(["crontab", "-r"], capture_output=True)
    else:
        subprocess.run(["crontab", "-"], input=text, text=True, check=True)


def _restore_journal(journal: Path) -> None:
    recorded = journal.read_text()
    write(None if recorded == ABSENT else recorded.removeprefix(PRESENT))
    journal.unlink()


class _Terminated(BaseException):
    """SIGTERM while the crontab is held: unwinds like Ctrl-C, so it is given back."""


@contextlib.contextmanager
def held() -> Iterator[str | None]:
    """Hold this user's crontab; yields the crontab as found (None: absent)."""
    journal = journal_path()
    with open(lock_path(), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if journal.exists():  # its holder died holding it
            _restore_journal(journal)
        found = read()
        staged = journal.with_suffix(".tmp")
        staged.write_text(ABSENT if found is None else PRESENT + found)
        staged.replace(journal)

        def terminated(*_):
            raise _Terminated

        previous = signal.signal(signal.SIGTERM, terminated)
        try:
            yield found
        finally:
            signal.signal(signal.SIGTERM, previous)
            _restore_journal(journal)


def lines() -> list[str]:
    """The crontab's lines ([] when this user has none)."""
    return (read() or "").splitlines()
