#!/bin/sh
# Usage: sync_pack.sh ROOT JOB_ID OUT DIR...
#
# On the node that holds the newest copy of each DIR (roles/sync_dirs,
# tasks/pack.yml): the DIRs of the job's workdir as one tar file, OUT (relative
# to ROOT/JOB_ID), which the role then brings to the controller. sync_probe.sh
# checked the DIRs stay inside the workdir. GNU tar writes sparse files as
# sparse members, so a preallocated checkpoint's holes never travel.
set -eu
root=$1 job=$2 out=$3
shift 3
case $root in
    "~") root=$HOME ;;
    "~/"*) root=$HOME/${root#"~/"} ;;
esac
cd "$root/$job/workdir"
# ./ first: a DIR that starts with - is a name, not an option.
for path; do
    shift
    set -- "$@" "./$path"
done
sparse=
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
    sparse=--sparse
fi
umask 077
tar -cf "$root/$job/$out" $sparse "$@"
echo "$root/$job/$out"
