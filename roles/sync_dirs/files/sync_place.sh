#!/bin/sh
# Usage: sync_place.sh ROOT JOB_ID STUDY DIR...
#
# On one node of each filesystem of the next attempt (roles/sync_dirs,
# tasks/place.yml), from the private folder of its SSH round trip, which holds
# the bundles (*.tar, made by sync_pack.sh): each DIR of them replaces the job's copy,
# and with STUDY (relative to ROOT, or absolute) an Optuna job's study file
# replaces the node's, its write-ahead log with it.
# Every argument is data, never parsed by a shell.
#
# Where the job's tree is unpacked, the bundles are unpacked beside it, then
# each DIR moved in by renames (the old copy aside first, removed once the new
# one is in), so no DIR is ever half-written. A node that never held the tree
# (a spare) keeps the DIRs in ROOT/JOB_ID/synced/, listed in synced.dirs, until
# its launch unpacks the tree (roles/launch/files/start_rank.sh puts them in
# before the tree appears).
# ROOT is absolute (what sync_probe.sh printed).
# Exit 65: a DIR's folder leaves the workdir (a link the job made).
set -eu
root=$1 job=$2 study=$3
shift 3
cd -- "$root"  # a relative STUDY is under it
bundle=$(dirname "$0")
incoming=$(mktemp -d "$root/$job/.sync-incoming.XXXXXX")
trap 'rm -rf "$incoming"' EXIT
for tarfile in "$bundle"/*.tar; do
    [ -f "$tarfile" ] || continue
    if ! tar -xf "$tarfile" -C "$incoming" --no-same-owner; then
        # tar says only "Wrote only N of M bytes" of a disk that is full.
        df -Pk "$root" | awk 'NR == 2 && $4 < 1024 { exit 1 }' || echo "$root: No space left on device" >&2
        exit 1
    fi
done
if [ -n "$study" ]; then
    name=$(basename -- "$study")
    mkdir -p -- "$(dirname -- "$study")"
    # The new file with its own log, or none: never the old log beside the new file.
    rm -f -- "$study-wal" "$study-shm"
    [ ! -f "$incoming/s/$name-wal" ] || mv -f -- "$incoming/s/$name-wal" "$study-wal"
    mv -f -- "$incoming/s/$name" "$study"
    echo "placed the study $name"
fi
[ "$#" -gt 0 ] || exit 0
if [ -d "$root/$job/workdir" ]; then
    top=$(realpath -- "$root/$job/workdir")
else
    top=$root/$job/synced
    mkdir -p "$top"
    : >"$root/$job/synced.dirs"
fi
for path; do
    parent=$(dirname -- "$top/$path")
    mkdir -p -- "$parent"
    case $(realpath -- "$parent") in
        "$top" | "$top"/*) ;;
        *) echo "$path leaves the workdir of job $job: its folder resolves to $(realpath -- "$parent")" >&2
           exit 65 ;;
    esac
    old=$(mktemp -d "$parent/.sync-old.XXXXXX")
    if [ -e "$top/$path" ] || [ -L "$top/$path" ]; then
        mv -- "$top/$path" "$old/"
    fi
    mv -- "$incoming/w/$path" "$top/$path"
    rm -rf -- "$old"
    [ "$top" != "$root/$job/synced" ] || printf '%s\n' "$path" >>"$root/$job/synced.dirs"
    echo "placed $path"
done
