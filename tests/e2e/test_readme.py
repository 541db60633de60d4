"""The README's first command, run as a new user would from a clone, shows
the job's output, not only its final state (issue 26, item 14)."""

import re
import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_the_readmes_first_command_shows_the_jobs_output(cli):
    first = next(line for line in (REPO / "README.md").read_text().splitlines()
                 if line.startswith("tsubmit run "))
    try:
        result = cli(*shlex.split(first)[1:], cwd=REPO)
        assert result.code == 0, result.output
        for worker in (0, 1):
            line = rf"^\[worker {worker}\] rank {worker}/2 .* OK$"
            assert re.search(line, result.stdout, re.M), result.output
        assert "succeeded" in result.stdout
    finally:
        cli("delete", "--all", "--yes")
