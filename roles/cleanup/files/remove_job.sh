#!/bin/sh
# Usage: remove_job.sh JOB_DIR JOB_ID [ENGINE]
# Remove a job from this node: with ENGINE, every container it left (found by
# its tsubmit.job label), then its folder JOB_DIR (the role passes it: the
# layout is tsubmit/layout.py's). Plain sh, no Python: it must work on a node
# whose Python is broken. Prints what it removed; prints nothing when there
# was nothing.
set -eu
job_dir=$1 job_id=$2 engine=${3:-}
case $job_dir in "~" | "~"/*) job_dir=$HOME${job_dir#"~"} ;; esac
case $job_id in "" | *[!0-9a-zA-Z_-]*) echo "remove_job.sh: bad job id '$job_id'" >&2; exit 2 ;; esac
# A folder that is not the job's own is never removed, whatever was passed.
case $job_dir in */"$job_id") ;; *) echo "remove_job.sh: $job_dir is not the folder of job $job_id" >&2; exit 2 ;; esac
if [ -n "$engine" ] && command -v "$engine" >/dev/null 2>&1; then
    ids=$("$engine" ps --all --quiet --filter "label=tsubmit.job=$job_id")
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086  # one id per word
        "$engine" rm --force $ids
    fi
fi
if [ -e "$job_dir" ]; then
    rm -rf -- "$job_dir"
    echo "removed $job_dir"
fi
