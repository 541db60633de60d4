"""Nodes as unkind as real ones (what issue 16 found), as options of SshNodes.

``stale_python`` puts a folder holding a stale pyenv-like ``python3.13`` shim
first on every session's PATH (sshd's ``SetEnv``), which is what Ansible's
interpreter discovery picks first; ``slow_rc`` makes every session pay a login
script's delay first (sshd's ``ForceCommand`` runs a wrapper that sleeps, then
the command), as a shell running pyenv or conda init does.  Every node runs as
one user with one home, so these live in the nodes' sshd_config, never in the
shared home.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# The PATH sshd gives a session on Debian; the stale shim folder goes before it.
SESSION_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
# What a pyenv shim prints for a version the user no longer has (pyenv's own words).
STALE_SHIM = r"""#!/bin/sh
# A stale pyenv shim: pyenv made it for a Python that is no longer installed.
program="${0##*/}"
cat >&2 <<EOF
pyenv: $program: command not found

The \`$program' command exists in these Python versions:
  3.13.0

Note: See 'pyenv help global' for tips on allowing multiple
      Python versions to be found at the same time.
EOF
exit 127
"""
# sshd runs ForceCommand through the user's shell with the client's command in
# SSH_ORIGINAL_COMMAND; the wrapper sleeps like a heavy rc file, then runs it
# (sftp included, which ForceCommand would otherwise replace).
SLOW_LOGIN = """#!/bin/sh
# A login environment that costs time on every session (pyenv/conda init).
sleep {delay}
case "$SSH_ORIGINAL_COMMAND" in
  "") exec /bin/sh -l ;;
  internal-sftp|sftp|*sftp-server) exec {sftp} ;;
  *) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
"""


@dataclass(frozen=True)
class Unkindness:
    """What makes every node of a harness unkind, and the files it needs in BASE_DIR."""

    base_dir: Path
    stale_python: bool = False
    slow_rc: float = 0.0  # seconds every session waits before its command

    @property
    def shim_dir(self) -> Path:
        """The folder first on every session's PATH when ``stale_python``."""
        return self.base_dir / "shims"

    @property
    def login_wrapper(self) -> Path:
        return self.base_dir / "slow-login.sh"

    def write_files(self) -> None:
        if self.stale_python:
            self.shim_dir.mkdir(mode=0o755)
            shim = self.shim_dir / "python3.13"
            shim.write_text(STALE_SHIM)
            shim.chmod(0o755)
        if self.slow_rc:
            self.login_wrapper.write_text(SLOW_LOGIN.format(delay=self.slow_rc, sftp=SFTP_SERVER))
            self.login_wrapper.chmod(0o755)

    def session_env(self) -> dict[str, str]:
        """What every session's environment gets (sshd's SetEnv)."""
        return {"PATH": f"{self.shim_dir}:{SESSION_PATH}"} if self.stale_python else {}

    def sshd_config(self) -> list[str]:
        return [f"ForceCommand {self.login_wrapper}"] if self.slow_rc else []
