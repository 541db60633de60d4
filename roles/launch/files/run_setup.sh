#!/bin/sh
# Usage: run_setup.sh SETUP_DIR SETUP_FILE ATTEMPT_DIR WORKDIR
#        (fd 9: SETUP_DIR.lock, opened for the caller, start_rank.sh)
#
# The job's setup (`tsubmit run --setup`), cached per node and inputs:
# SETUP_DIR is <remote root>/.setup/<key>, the key computed on the controller
# from the setup string and its key files. SETUP_DIR.done, written by one
# rename once the setup succeeded, says it is complete; until then no rank
# uses the folder. The lock on fd 9 is exclusive while a setup runs, so jobs
# started together, on this node or on nodes sharing the folder (an NFS
# home), run it once and wait for each other; it is left shared, and the
# rank inherits it from start_rank.sh, so `tsubmit gc` (which needs it
# exclusive) never removes a folder a setup writes or a rank uses.
#
# The setup runs as `sh -c SETUP` in WORKDIR with the rank's environment
# (ATTEMPT_DIR/environment.sh, which sets TSUBMIT_SETUP_DIR), its output in
# ATTEMPT_DIR/setup.log. On failure the half-made folder is removed, the last
# lines of the output go to stderr (the launch's message) and it exits 3.
# Plain sh, no Python: the node's Python may be what the setup installs.
set -u
dir=$1 setup_file=$2 attempt_dir=$3 workdir=$4
log=$attempt_dir/setup.log
done_mark=$dir.done
setup=$(cat "$setup_file")

say() { echo "[tsubmit] $*" >>"$log"; }

if ! command -v flock >/dev/null 2>&1; then
    echo "--setup needs flock (util-linux) on the node, to run each setup once at a time" >&2
    exit 3
fi
: >>"$log"
if ! flock -n -s 9; then
    say "waiting: the same setup runs for another job (on this node or one sharing $dir)"
    flock -s 9
fi
if [ -f "$done_mark" ]; then
    say "setup skipped: it already succeeded here with the same inputs ($dir)"
else
    # Only one runs it: the others wait here, then find it done.
    flock -u 9
    flock -x 9
    if [ -f "$done_mark" ]; then
        say "setup skipped: another job ran it meanwhile with the same inputs ($dir)"
    else
        rm -rf "$dir"  # what a setup that failed or was killed left
        mkdir -p "$dir"
        say "running the setup in $workdir (TSUBMIT_SETUP_DIR=$dir)"
        # fd 9 closed: a daemon the setup leaves must not hold the lock.
        (
            cd "$workdir" || exit 1
            . "$attempt_dir/environment.sh"
            exec /bin/sh -c "$setup"
        ) </dev/null >>"$log" 2>&1 9>&-
        code=$?
        if [ "$code" -ne 0 ]; then
            rm -rf "$dir"
            last=$(grep -v '^\[tsubmit\] ' "$log" | tail -n 5 | cut -c 1-300 | sed 's/$/ |/' | tr '\n' ' ')
            [ -n "$last" ] || last="(it printed nothing)"
            echo "the setup failed with exit code $code; the last lines of its output: ${last% | }" >&2
            exit 3
        fi
        date +%s >"$done_mark.$$"
        mv -f "$done_mark.$$" "$done_mark"
        say "setup done"
    fi
fi
touch "$dir.used"  # before the lock is shared again: gc looks at it under the lock
flock -s 9
echo "$dir" >"$attempt_dir/setup"
