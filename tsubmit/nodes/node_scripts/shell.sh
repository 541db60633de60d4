# tsubmit shell, on the node: the rank's environment loaded, in the job's
# workdir, then COMMAND (exec'd: its exit code is the session's) or the user's
# shell. Run as `sh -c SCRIPT tsubmit WORKDIR ENVIRONMENT JOB RANK HOST
# [COMMAND...]`: every argument is data, never parsed by a shell.
#   WORKDIR      the job's tree, absolute or relative to this user's home
#                (launch_contract.home_relative)
#   ENVIRONMENT  the attempt's environment.sh, the same
# The environment is the file launch.sh sources around the rank's command
# (environment.sh beside it), so both see the same variables.
# Exit 3 when the job's files are not on this node, 127 when COMMAND is not found.
set -u
workdir=$1 environment=$2 job=$3 rank=$4 host=$5
shift 5
cd || exit 3
if [ ! -d "$workdir" ]; then
    echo "tsubmit: job $job has no folder $workdir on $host: its launch never reached the node, or the job was removed there" >&2
    exit 3
fi
if [ ! -r "$environment" ]; then
    echo "tsubmit: rank $rank of job $job has no environment file $environment on $host" >&2
    exit 3
fi
set +u
. "$environment"
cd "$workdir" || exit 3
if [ "$#" -gt 0 ]; then
    # Named here: sh's own "exec: ... not found" names neither the host nor the rank.
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "tsubmit: $1: command not found on $host (rank $rank of job $job, with the rank's PATH)" >&2
        exit 127
    fi
    exec "$@"
fi
if [ -t 0 ]; then
    echo "tsubmit: rank $rank of job $job on $host, in $PWD with the rank's environment; exit to leave" >&2
    exec "${SHELL:-/bin/sh}" -i
fi
exec "${SHELL:-/bin/sh}"
