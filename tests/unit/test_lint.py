"""The style gates run with the tests: ruff over the Python, ansible-lint's
production profile over the roles and playbooks."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_passes():
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_passes():
    # Ansible settings of the test process (other tests may set some) stay out of it.
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "roles", "playbooks"],
        cwd=REPO, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
