#!/bin/sh
# Usage: stop.sh JOB_DIR RANK GRACE_SECONDS
# Stop this node's rank of a job: SIGTERM to the rank's whole process group
# (the launch shell, torchrun and every worker), SIGKILL to what is left after
# the grace period. A pid is only signalled while its start time still
# matches the one recorded at launch, so a pid the OS reused is never hit.
# Prints one line per attempt it acted on; prints nothing when nothing ran.
set -u
job_dir=$1
rank=$2
grace=$3
case $job_dir in "~"/*) job_dir=$HOME/${job_dir#"~/"} ;; esac

is_ours() { # PID STARTTICKS: the process still is the one we started
    [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f22 "/proc/$1/stat" 2>/dev/null)" = "$2" ]
}
group_alive() { # PGID: any process left in the group
    pgrep -g "$1" >/dev/null 2>&1
}

for pid_file in "$job_dir/rank-$rank"/attempt-*/pid; do
    [ -s "$pid_file" ] || continue
    attempt_dir=$(dirname "$pid_file")
    # A rank in a container: the engine stops it (SIGTERM, then SIGKILL after
    # the grace period) and removes it; the launch shell then ends by itself.
    if [ -s "$attempt_dir/container" ] && [ ! -e "$attempt_dir/exit_code" ]; then
        read -r engine name < "$attempt_dir/container"
        if "$engine" inspect "$name" >/dev/null 2>&1; then
            date +%s > "$attempt_dir/stopped"
            "$engine" stop --time "$grace" "$name" >/dev/null 2>&1
            "$engine" rm --force "$name" >/dev/null 2>&1
            echo "stopped container $name"
        fi
    fi
    read -r pid ticks _ < "$pid_file"
    # A live pid with another start time is not ours: the OS reused it.
    if [ -e "/proc/$pid" ] && ! is_ours "$pid" "$ticks"; then
        continue
    fi
    # The group outlives its leader while workers remain: stop those too.
    group_alive "$pid" || continue
    [ -e "$attempt_dir/exit_code" ] || date +%s > "$attempt_dir/stopped"
    kill -TERM "-$pid" 2>/dev/null
    waited=0
    while group_alive "$pid" && [ "$waited" -lt "$((grace * 5))" ]; do
        sleep 0.2
        waited=$((waited + 1))
    done
    if group_alive "$pid"; then
        kill -KILL "-$pid" 2>/dev/null
        echo "killed $attempt_dir after ${grace}s"
    else
        echo "stopped $attempt_dir"
    fi
done
exit 0
