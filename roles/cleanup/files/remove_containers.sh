#!/bin/sh
# Usage: remove_containers.sh ENGINE JOB_ID
# Remove every container left by a job (found by its tsubmit.job label).
# Prints their ids; prints nothing when there were none.
set -eu
command -v "$1" >/dev/null 2>&1 || exit 0
ids=$("$1" ps --all --quiet --filter "label=tsubmit.job=$2")
[ -n "$ids" ] || exit 0
# shellcheck disable=SC2086  # one id per word
"$1" rm --force $ids
