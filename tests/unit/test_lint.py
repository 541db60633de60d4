"""The style gates run with the tests: ruff over the Python, ansible-lint's
production profile over the whole repository, as an operator runs it at the
top (galaxy.yml, meta/, roles/, playbooks/, examples/)."""

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
    # No path given: ansible-lint takes the project as a whole, as at the top of
    # a collection (galaxy.yml and meta/ included), not only roles/ and playbooks/.
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=REPO, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
