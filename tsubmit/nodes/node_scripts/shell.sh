# tsubmit shell, on the node: the rank's environment loaded, in the job's
# workdir, then COMMAND (exec'd: its exit code is the session's) or the user's
# shell. Run as `sh -c SCRIPT tsubmit ROOT WORKDIR ENVIRONMENT JOB RANK HOST
# [COMMAND...]`: every argument is data, never parsed by a shell.
#   ROOT         the host's tsubmit_remote_root (a leading ~ is this user's home)
#   WORKDIR      the job's tree, relative to ROOT (tsubmit/model/layout.py)
#   ENVIRONMENT  the attempt's environment.sh, relative to ROOT
# The environment is the file launch.sh sources around the rank's command
# (environment.sh beside it), so both see the same variables.
# Exit 3 when the job's files are not on this node, 127 when COMMAND is not found.
set -u
root=$1 workdir=$2 environment=$3 job=$4 rank=$5 host=$6
shift 6
case $root in
    "~") root=$HOME ;;
    "~/"*) root=$HOME/${root#"~/"} ;;
esac
workdir=$root/$workdir
environment=$root/$environment
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
    # Named here: sh's own "exec: ... not found" names neither the host nor the rank.
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "tsubmit: $1: command not found on $host (rank $rank of job $job, with the rank's PATH)" >&2
        exit 127
    fi
    exec "$@"
fi
if [ -t 0 ]; then
    echo "tsubmit: rank $rank of job $job on $host, in $workdir with the rank's environment; exit to leave" >&2
    exec "${SHELL:-/bin/sh}" -i
fi
exec "${SHELL:-/bin/sh}"
