"""What a test does when the machine lacks something scripts/setup.sh --test
installs: on CI (CI set, as CI systems and .ci/run do) that is a failure, for
a green CI must mean every test ran; on a developer's machine, a skip."""

import os

import pytest


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str):
    """Fail on CI, skip elsewhere: REASON says what is missing and how to install it."""
    (pytest.fail if on_ci() else pytest.skip)(reason)
