# tsubmit shell, on the node: the rank's environment loaded, in the job's
# workdir, then COMMAND (exec'd: its exit code is the session's) or the user's
# shell. Run as `sh -c SCRIPT tsubmit ROOT JOB RANK ATTEMPT HOST [COMMAND...]`:
# every argument is data, never parsed by a shell.
#   ROOT  the host's tsubmit_remote_root (a leading ~ is this user's home)
# The environment is the file launch.sh sources around the rank's command
# (environment.sh beside it), so both see the same variables.
# Exit 3 when the job's files are not on this node.
set -u
root=$1 job=$2 rank=$3 attempt=$4 host=$5
shift 5
case $root in
    "~") root=$HOME ;;
    "~/"*) root=$HOME/${root#"~/"} ;;
esac
workdir=$root/$job/workdir
environment=$root/$job/rank-$rank/attempt-$attempt/environment.sh
if [ ! -d "$workdir" ]; then
    echo "tsubmit: job $job has no folder $workdir on $host: its launch never reached the node, or the job was removed there" >&2
    exit 3
fi
if [ ! -r "$environment" ]; then
    echo "tsubmit: rank $rank of job $job has no environment file $environment on $host" >&2
    exit 3
fi
cd "$workdir" || exit 3
set +u
. "$environment"
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
if [ -t 0 ]; then
    echo "tsubmit: rank $rank of job $job on $host, in $workdir with the rank's environment; exit to leave" >&2
    exec "${SHELL:-/bin/sh}" -i
fi
exec "${SHELL:-/bin/sh}"
