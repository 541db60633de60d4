"""Test harness: real sshd nodes on loopback addresses for end-to-end tests.

tsubmit's job is to reach machines over SSH with Ansible, so the e2e tests run
it against real ``sshd`` processes instead of mocks; see :mod:`tests.harness.sshd`.
How tests wait is :mod:`tests.harness.waiting`; what they read of a job,
:mod:`tests.harness.jobs`.
"""

from .sshd import Node, SshCommandError, SshNodes, xdist_subnet
from .waiting import eventually

__all__ = ["Node", "SshCommandError", "SshNodes", "eventually", "xdist_subnet"]
