# tsubmit shell, on the node: the rank's environment loaded, in the job's
# workdir, then COMMAND (exec'd: its exit code is the session's) or the user's
# shell. Run as `sh -c SCRIPT tsubmit AWK ROOT JOB RANK ATTEMPT HOST [COMMAND...]`:
# every argument is data, never parsed by a shell.
#   AWK   environment.awk: picks the environment statements out of launch.sh
#   ROOT  the host's tsubmit_remote_root (a leading ~ is this user's home)
# The environment is the one launch.sh gives the rank's command (the same
# statements, read from the same file), not a copy made at submit time.
# Exit 3 when the job's files are not on this node.
set -u
awk_program=$1 root=$2 job=$3 rank=$4 attempt=$5 host=$6
shift 6
case $root in
    "~") root=$HOME ;;
    "~/"*) root=$HOME/${root#"~/"} ;;
esac
workdir=$root/$job/workdir
launch=$root/$job/rank-$rank/attempt-$attempt/launch.sh
if [ ! -d "$workdir" ]; then
    echo "tsubmit: job $job has no folder $workdir on $host: its launch never reached the node, or the job was removed there" >&2
    exit 3
fi
if [ ! -r "$launch" ]; then
    echo "tsubmit: rank $rank of job $job has no launch script $launch on $host" >&2
    exit 3
fi
if ! environment=$(awk "$awk_program" "$launch"); then
    echo "tsubmit: cannot find the environment part of $launch on $host" >&2
    exit 3
fi
cd "$workdir" || exit 3
set +u
eval "$environment"
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
if [ -t 0 ]; then
    echo "tsubmit: rank $rank of job $job on $host, in $workdir with the rank's environment; exit to leave" >&2
    exec "${SHELL:-/bin/sh}" -i
fi
exec "${SHELL:-/bin/sh}"
