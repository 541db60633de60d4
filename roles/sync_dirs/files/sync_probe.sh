#!/bin/sh
# Usage: sync_probe.sh ROOT JOB_ID TOKEN STUDY DIR...
#
# Before a job's next attempt (roles/sync_dirs, tasks/probe.yml), on every node
# of the ending attempt and of the next: which filesystem the node's remote root
# is on, and how new its copy of each DIR (relative to the job's workdir) and of
# an Optuna job's study file STUDY (relative to ROOT, or absolute; "": none) is.
# ROOT is absolute or relative to this user's home (tsubmit.cluster.remote_root's
# home_relative). Every argument is data, never parsed by a shell. Prints:
#   root PATH         the remote root, absolute
#   filesystem ID     the root's marker ROOT/.filesystem, written once with the
#                     first TOKEN that reaches it: nodes that print the same ID
#                     share the root (one machine, or one NFS export)
#   dir N TIME|-      per DIR, in order: when anything under it was last
#                     written (seconds since the epoch), or - without one
#   study TIME|-      the same of STUDY (its write-ahead log counts), when given
# Exit 65: a DIR, or a symbolic link under it, leaves the workdir.
set -u
. "${0%/*}/workdir_check.sh"  # leaves_workdir, the node library's, shipped beside
root=$1 job=$2 token=$3 study=$4
shift 4
# From the root on: a relative STUDY is under it.
cd && mkdir -p "$root" && cd -- "$root" && root=$PWD || exit 1
marker=$root/.filesystem
if [ ! -s "$marker" ]; then
    # Written aside, then linked: a link never replaces an existing marker, so
    # nodes that share the root all read the first one.
    printf '%s\n' "$token" >"$marker.$token" || exit 1
    ln "$marker.$token" "$marker" 2>/dev/null || true
    rm -f "$marker.$token"
fi
read -r id <"$marker" || exit 1
echo "root $root"
echo "filesystem $id"
top=$(realpath -- "$root/$job/workdir" 2>/dev/null) || top=
n=0
for path; do
    n=$((n + 1))
    if [ -z "$top" ] || { [ ! -e "$top/$path" ] && [ ! -L "$top/$path" ]; }; then
        echo "dir $n -"
        continue
    fi
    outside=$(leaves_workdir "$top" "$path")
    if [ -n "$outside" ]; then
        echo "$path leaves the workdir of job $job: $outside" >&2
        exit 65
    fi
    newest=$(find "$top/$path" -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1)
    [ -n "$newest" ] || newest=$(find "$top/$path" -exec stat -c %Y {} + | sort -n | tail -n 1)
    echo "dir $n ${newest:--}"
done
if [ -n "$study" ]; then
    newest=$(find "$study" "$study-wal" -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1)
    echo "study ${newest:--}"
fi
