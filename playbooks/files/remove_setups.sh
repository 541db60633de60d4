#!/bin/sh
# Usage: remove_setups.sh REMOTE_ROOT SECONDS [dry-run]
#
# `tsubmit gc --setups-unused-for`: remove the setup folders under
# REMOTE_ROOT/.setup (run --setup; roles/launch/files/run_setup.sh) that no
# rank used for SECONDS. A folder is removed only under its lock, taken
# exclusive without waiting: a setup that runs holds it exclusive and every
# rank that uses the folder holds it shared for as long as it runs, so a
# folder in use is never removed, however long ago it was last taken. The
# done mark goes first, so a job arriving after the removal runs the setup
# again. The lock files stay (empty): removing one while another job opens it
# would let two setups run at once.
#
# Prints "removed KEY LAST_USED_EPOCH", or "in use KEY", per folder old
# enough; nothing when there is none. Plain sh, no Python.
set -u
root=$1 seconds=$2 dry=${3:-}
case $root in "~" | "~"/*) root=$HOME${root#"~"} ;; esac
case $seconds in "" | *[!0-9]*) echo "remove_setups.sh: bad age '$seconds'" >&2; exit 2 ;; esac
cache=$root/.setup
[ -d "$cache" ] || exit 0
if ! command -v flock >/dev/null 2>&1; then
    echo "removing setup folders needs flock (util-linux) on the node" >&2
    exit 3
fi

last_used() { # DIR: when a rank last took it (the folder's own time if never)
    if [ -e "$1.used" ]; then stat -c %Y "$1.used"; else stat -c %Y "$1"; fi
}

now=$(date +%s)
for dir in "$cache"/*; do
    [ -d "$dir" ] || continue
    key=${dir##*/}
    [ $((now - $(last_used "$dir"))) -ge "$seconds" ] || continue
    exec 8>>"$dir.lock"
    if ! flock -n -x 8; then
        echo "in use $key"
    else
        last=$(last_used "$dir")  # again, under the lock: a rank may have just taken it
        if [ $((now - last)) -ge "$seconds" ]; then
            if [ -z "$dry" ]; then
                rm -f "$dir.done"
                rm -rf "$dir"
                rm -f "$dir.used"
            fi
            echo "removed $key $last"
        fi
    fi
    exec 8>&-
done
