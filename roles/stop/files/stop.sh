#!/bin/sh
# Usage: stop.sh RANK_DIR JOB_ID RANK GRACE_SECONDS [ATTEMPT [remove [FENCE]]]
#
# Stop this node's rank of a job: every attempt's, or only ATTEMPT's (with
# `remove`, that attempt's folder is removed after: a restart rolled back).
# With FENCE, no attempt below FENCE may start on this node from now on: the
# number goes in RANK_DIR/fence before anything is stopped, and launch.sh
# refuses such an attempt, also in a launch still under way from a launcher
# that was killed, so a stopped attempt never comes back beside the next one.
# RANK_DIR is the rank's folder, RANK_DIR/attempt-K one attempt's (the layout
# of tsubmit/layout.py; the role passes it, this script composes no more).
#
# A rank's processes are every process of this user whose environment holds
# the rank's marker, TSUBMIT_RANK_MARKER=JOB_ID.rRANK.aATTEMPT (launch.sh
# exports it first thing, and children inherit it), so processes that left
# the rank's process group or session are found too: a setsid daemon,
# torchrun's workers (each in a session of its own), the workers of a
# torchrun killed with -9. The recorded process group is signalled as well,
# for a process that cleared its environment while staying in the group; its
# leader's start time must match the one recorded at launch, so a pid the OS
# reused is never hit. SIGTERM first, SIGKILL to what is left after the grace
# period, then the sweep is repeated until nothing carries the marker.
#
# Prints one line per attempt it acted on and a last line "left N"; prints
# nothing when nothing of the rank ran. Exits 1 when processes survived.
set -u
rank_dir=$1 job_id=$2 rank=$3 grace=$4 only_attempt=${5:-} remove=${6:-} fence=${7:-}
case $rank_dir in "~"/*) rank_dir=$HOME/${rank_dir#"~/"} ;; esac
case $job_id in "" | *[!0-9a-zA-Z_-]*) echo "stop.sh: bad job id '$job_id'" >&2; exit 2 ;; esac
case $fence in *[!0-9]*) echo "stop.sh: bad fence '$fence'" >&2; exit 2 ;; esac
if [ -n "$fence" ]; then
    # Raised, never lowered: a slower stop of an older attempt keeps the newer fence.
    mkdir -p "$rank_dir"
    fenced=$(cat "$rank_dir/fence" 2>/dev/null) || fenced=0
    case $fenced in "" | *[!0-9]*) fenced=0 ;; esac
    if [ "$fence" -gt "$fenced" ]; then
        echo "$fence" > "$rank_dir/fence.$$" && mv -f "$rank_dir/fence.$$" "$rank_dir/fence" || exit 1
    fi
fi
attempt_pattern=${only_attempt:-*}
marker="TSUBMIT_RANK_MARKER=$job_id\.r$rank\.a"

# The pids of this user's processes whose marker names ATTEMPT (default: the
# attempts this stop is for). One grep reads every environment it may
# (others' are unreadable: -s); a zombie's is empty.
marked() {
    grep -lszxE "$marker${1:-${only_attempt:-[0-9]+}}" /proc/[0-9]*/environ 2>/dev/null |
    while IFS=/ read -r _ _ pid _; do
        [ -O "/proc/$pid" ] && [ "$pid" != "$$" ] && echo "$pid"
    done
}
# PID STARTTICKS: the pid still is the process we started, its start time
# (field 22 of /proc/PID/stat) unchanged, so the OS has not reused it. The
# fields are read after the command name's last ")", as tsubmit_procs.py reads
# them: a name may hold spaces and parentheses. Unlike there, a zombie still
# counts: the question is whether the pid was reused (a zombie's was not, and
# its group may live on), not whether it runs.
is_ours() {
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    expected=$2
    # shellcheck disable=SC2086 # split into its fields on purpose (numbers and a state letter)
    set -- ${stat##*") "}
    [ "$#" -ge 20 ] && [ "${20}" = "$expected" ]
}
signal_all() { # SIGNAL: every marked process and the recorded groups
    for pid in $(marked); do kill "-$1" "$pid" 2>/dev/null; done
    for group in $groups; do kill "-$1" "-$group" 2>/dev/null; done
}
alive() { [ -n "$(marked)" ] || { [ -n "$groups" ] && pgrep -g "$(echo $groups | tr ' ' ,)" >/dev/null 2>&1; }; }

groups=""
acted=""
for attempt_dir in "$rank_dir"/attempt-$attempt_pattern; do
    [ -d "$attempt_dir" ] || continue
    # A rank in a container: the engine stops it (SIGTERM, then SIGKILL after
    # the grace period) and removes it; the launch shell then ends by itself.
    if [ -s "$attempt_dir/container" ] && [ ! -e "$attempt_dir/exit_code" ]; then
        read -r engine name < "$attempt_dir/container"
        if "$engine" inspect "$name" >/dev/null 2>&1; then
            date +%s > "$attempt_dir/stopped"
            "$engine" stop --time "$grace" "$name" >/dev/null 2>&1
            "$engine" rm --force "$name" >/dev/null 2>&1
            echo "stopped container $name"
            acted=yes
        fi
    fi
    [ -s "$attempt_dir/pid" ] || continue
    read -r pid ticks _ < "$attempt_dir/pid"
    # A live pid with another start time is not ours: the OS reused it.
    if [ -e "/proc/$pid" ] && ! is_ours "$pid" "$ticks"; then
        continue
    fi
    if pgrep -g "$pid" >/dev/null 2>&1 || [ -n "$(marked "${attempt_dir##*-}")" ]; then
        groups="$groups $pid"
        [ -e "$attempt_dir/exit_code" ] || date +%s > "$attempt_dir/stopped"
        echo "stopped $attempt_dir"
        acted=yes
    fi
done
# Processes with the marker and no live attempt (their launch shell ended).
if [ -z "$acted" ] && [ -n "$(marked)" ]; then
    echo "stopped processes left by rank $rank"
    acted=yes
fi

if [ -n "$acted" ]; then
    signal_all TERM
    waited=0
    while alive && [ "$waited" -lt "$((grace * 5))" ]; do
        sleep 0.2
        waited=$((waited + 1))
    done
    # A process may fork while it is killed: sweep until none is left.
    sweeps=0
    while alive && [ "$sweeps" -lt 25 ]; do
        [ "$sweeps" -gt 0 ] || echo "killed what was left after ${grace}s"
        signal_all KILL
        sleep 0.2
        sweeps=$((sweeps + 1))
    done
    left=$(marked | wc -l)
    echo "left $left"
    if [ "$left" -gt 0 ]; then
        echo "$left process(es) of rank $rank survived SIGKILL: $(marked | tr '\n' ' ')" >&2
        exit 1
    fi
fi
if [ "$remove" = remove ] && [ -n "$only_attempt" ]; then
    rm -rf "$rank_dir/attempt-$only_attempt"
fi
exit 0
