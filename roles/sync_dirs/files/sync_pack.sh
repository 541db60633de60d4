#!/bin/sh
# Usage: sync_pack.sh ROOT JOB_ID OUT STUDY DIR...
#
# On the node that holds the newest copy of each DIR (roles/sync_dirs,
# tasks/pack.yml): the DIRs of the job's workdir as one tar file, OUT (relative
# to ROOT/JOB_ID), which the role then brings to the controller; with STUDY (an
# Optuna job's study file, relative to ROOT or absolute), that file and its
# write-ahead log too. Members: w/DIR..., s/FILE. sync_probe.sh checked the
# DIRs stay inside the workdir. GNU tar writes sparse files as sparse members,
# so a preallocated checkpoint's holes never travel.
set -eu
root=$1 job=$2 out=$3 study=$4
shift 4
# The members' two folders are links: tar keeps the names it is given, and
# stores what they lead to (a link under a DIR stays a link).
links=$(mktemp -d "$root/$job/.sync-pack.XXXXXX")
trap 'rm -rf "$links"' EXIT
ln -s "$root/$job/workdir" "$links/w"
# ./w/ first: a DIR that starts with - is a name, not an option.
for path; do
    shift
    set -- "$@" "./w/$path"
done
if [ -n "$study" ]; then
    study=$(cd -- "$root" && realpath -m -- "$study")  # a relative STUDY is under ROOT
    ln -s "$(dirname -- "$study")" "$links/s"
    name=$(basename -- "$study")
    set -- "$@" "./s/$name"
    [ ! -f "$study-wal" ] || set -- "$@" "./s/$name-wal"
fi
sparse=
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
    sparse=--sparse
fi
umask 077
cd "$links"
tar -cf "$root/$job/$out" $sparse "$@"
echo "$root/$job/$out"
