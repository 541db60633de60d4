#!/bin/sh
# Everything CI runs (.ci/run), after `sh scripts/setup.sh --test`: the test
# suite (which also builds the docs site strictly: tests/unit/test_docs.py).
set -eu
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -n 2
