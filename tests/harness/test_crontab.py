"""The cron tests' hold on the real crontab (tests/harness/crontab.py): a test
killed while holding it leaves nothing there once the next test takes it, and a
SIGTERM gives it back at once (issue 26, Tests). Uses the real crontab, under
the tests' lock."""

import signal
import subprocess
import sys

import pytest

from tests.harness import crontab

LEFT = "* * * * * echo left-by-a-killed-test\n"
HOLDER = f'''
import sys, time
from tests.harness import crontab
with crontab.held():
    crontab.write({LEFT!r})
    print("holding", flush=True)
    time.sleep(600)
'''


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_holder_that_dies_leaves_no_entry_of_its_own(signal_number):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True,
                              cwd=crontab.Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline() == "holding\n"
        holder.send_signal(signal_number)
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    if signal_number == signal.SIGTERM:  # given back on the way out
        assert LEFT not in (crontab.read() or "")
    with crontab.held() as found:
        assert LEFT not in (found or "")
    assert LEFT not in (crontab.read() or "")
    assert not crontab.journal_path().exists()
