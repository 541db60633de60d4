"""tsubmit: submit and manage distributed PyTorch jobs on machines reachable over SSH."""

__version__ = "0.1.0"
