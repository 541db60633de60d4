#!/bin/sh
# Usage: start_staged.sh ATTEMPT_DIR
# Start a rank that start_rank.sh staged (the pre-launch hooks ran in between)
# and print "PID STARTTICKS EPOCH"; an attempt that already started prints its
# pid again. Plain sh, no Python module: it must work on a node whose Python
# is broken.
set -eu
# A setup ran (start_rank.sh): the rank holds its lock, shared, as there.
if [ -f "$1/setup" ] && [ ! -s "$1/pid" ]; then
    setup_dir=$(cat "$1/setup")
    exec 9>>"$setup_dir.lock"
    flock -s 9
    [ -f "$setup_dir.done" ] || { echo "the setup folder $setup_dir was removed after the setup ran" >&2; exit 3; }
fi
if [ -s "$1/pid" ]; then
    cat "$1/pid"
else
    exec /bin/sh "$1/launch.sh" start
fi
