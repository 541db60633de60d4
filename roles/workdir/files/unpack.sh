#!/bin/sh
# Usage: unpack.sh ARCHIVE TREE
# Unpack ARCHIVE into TREE atomically: into a temporary folder beside it,
# then one rename. Nodes sharing a filesystem (an NFS home) may unpack the
# same job at once; the first rename wins and the others discard their copy,
# so nobody ever sees a half-written tree.
set -eu
archive=$1
tree=$2
mkdir -p "$(dirname "$tree")"
staging=$(mktemp -d "$tree.unpacking.XXXXXX")
trap 'rm -rf "$staging"' EXIT
tar -xzf "$archive" -C "$staging" --no-same-owner
mkdir -p "$staging/.tsubmit"
chmod 0755 "$staging"
mv -T "$staging" "$tree" 2>/dev/null || [ -d "$tree" ]
