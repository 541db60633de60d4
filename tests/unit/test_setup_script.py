"""scripts/setup.sh says what each step does before it does it (a minute or
more of silence otherwise). Its steps are test doubles here: run for real it
would install system packages and reinstall the venv every engineer and test
on this machine uses, for minutes. apt-get, dpkg-query (every package
missing), the venv's python and setup-ssh-nodes.sh are stubs that print what
they were asked, so the output shows each announcement before its step."""

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_setup_says_what_each_step_does_before_it_runs(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    stub(checkout / "scripts" / "setup-ssh-nodes.sh", 'echo "ran setup-ssh-nodes"')
    stub(checkout / ".venv" / "bin" / "python", 'echo "ran pip $5 $6"')
    tools = tmp_path / "bin"
    stub(tools / "dpkg-query", "exit 1")
    stub(tools / "apt-get", 'echo "ran apt-get $1"')
    stub(tools / "id", "echo 0")  # root: no sudo
    result = subprocess.run(["sh", str(checkout / "scripts" / "setup.sh"), "--test"], capture_output=True,
                            text=True, env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"},
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = [r"setup: installing system packages: python3 .* \(apt-get\)", "ran apt-get update",
                r"setup: installing torch \(CPU\), tsubmit .*", "ran pip torch==2.13.0 numpy",
                r"setup: installing what Optuna jobs need .*", "ran pip optuna>=4.3 grpcio",
                r"setup: preparing this machine for the test nodes .*", "ran setup-ssh-nodes",
                "setup: ready; tsubmit is .venv/bin/tsubmit"]
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected), result.stdout
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
