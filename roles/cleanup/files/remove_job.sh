#!/bin/sh
# Usage: remove_job.sh REMOTE_ROOT JOB_ID [ENGINE]
# Remove a job from this node: with ENGINE, every container it left (found by
# its tsubmit.job label), then its folder REMOTE_ROOT/JOB_ID. Plain sh, no
# Python: it must work on a node whose Python is broken. Prints what it
# removed; prints nothing when there was nothing.
set -eu
root=$1 job_id=$2 engine=${3:-}
case $root in "~" | "~"/*) root=$HOME${root#"~"} ;; esac
case $job_id in "" | *[!0-9a-zA-Z_-]*) echo "remove_job.sh: bad job id '$job_id'" >&2; exit 2 ;; esac
if [ -n "$engine" ] && command -v "$engine" >/dev/null 2>&1; then
    ids=$("$engine" ps --all --quiet --filter "label=tsubmit.job=$job_id")
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086  # one id per word
        "$engine" rm --force $ids
    fi
fi
if [ -e "$root/$job_id" ]; then
    rm -rf -- "${root:?}/$job_id"
    echo "removed $root/$job_id"
fi
