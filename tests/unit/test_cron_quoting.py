"""Crontab lines keep user strings data: each value, quoted by tsubmit.jobs.cron,
goes through cron's own `%` handling and /bin/sh and comes out unchanged."""

import subprocess

import pytest

from tsubmit.jobs.cron import _quote, cron_command


@pytest.mark.parametrize("value", [
    "plain", "with space", "it's", 'say "hi"', "$(touch PWNED)", "`id`", "$HOME",
    "50%", "%%", "\\%", "a\\\\%b", "trailing\\", "'%'", "\"%\"", "~", "*", "a;b|c&d", "#not a comment",
])
def test_a_quoted_value_survives_cron_and_the_shell(value, tmp_path):
    line = f"0 2 * * * printf '[%s]' {_quote(value)}".replace("'[%s]'", "'['\\%'s]'")
    command, stdin = cron_command(line)
    assert stdin is None
    printed = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True,
                             cwd=tmp_path)
    assert printed.stdout == f"[{value}]"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("line", "command", "stdin"), [
    ("* * * * * echo a%b%c", "echo a", "b\nc"),
    ("* * * * * echo a\\%b", "echo a%b", None),
    ("* * * * * echo a\\\\b", "echo a\\\\b", None),
    ("@daily echo 'x'\\%", "echo 'x'%", None),
])
def test_cron_command_reads_a_line_as_cron_does(line, command, stdin):
    assert cron_command(line) == (command, stdin)
