#!/bin/sh
# Usage: start_staged.sh ATTEMPT_DIR
# Start a rank that start_rank.sh staged (the pre-launch hooks ran in between)
# and print "PID STARTTICKS EPOCH"; an attempt that already started prints its
# pid again. Plain sh, no Python module: it must work on a node whose Python
# is broken.
set -eu
if [ -s "$1/pid" ]; then
    cat "$1/pid"
else
    exec /bin/sh "$1/launch.sh" start
fi
