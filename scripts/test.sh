#!/bin/sh
# Everything CI runs (.ci/run), after `sh scripts/setup.sh --test`: the full
# suite on .venv (which also builds the docs site strictly:
# tests/unit/test_docs.py), then the compatibility job (scripts/compat.sh).
set -eu
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -n 2
sh scripts/compat.sh
