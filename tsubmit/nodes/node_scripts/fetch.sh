# tsubmit fetch, on the node: check every PATH, then write them to stdout as one
# tar stream (GNU tar: sparse files as sparse members, so their holes never
# travel). Run as `sh -c SCRIPT tsubmit WORKDIR JOB HOST PATH...`: every
# argument is data, never parsed by a shell. tsubmit puts the node library's
# workdir_check.sh (leaves_workdir) before this text.
#   WORKDIR  the job's tree, absolute or relative to this user's home
#            (launch_contract.home_relative)
#   JOB      the job id, for messages
#   HOST     the inventory name, for messages
# Exit 65: a path leaves the workdir (itself, or a symbolic link under it,
# resolves outside); 66: a path does not exist; 67: the job has no workdir
# here. Otherwise tar's own code (1: a file changed while it was read).
set -u
workdir=$1 job=$2 host=$3
shift 3
cd || exit 67
if [ ! -d "$workdir" ]; then
    echo "job $job has no folder $workdir on $host: its launch never reached the node, or the job was removed there" >&2
    exit 67
fi
top=$(realpath -- "$workdir") || exit 67
for path; do
    if [ ! -e "$top/$path" ] && [ ! -L "$top/$path" ]; then
        echo "$path does not exist in the workdir of job $job on $host ($top)" >&2
        exit 66
    fi
    outside=$(leaves_workdir "$top" "$path")
    if [ -n "$outside" ]; then
        echo "$path leaves the workdir of job $job on $host: $outside" >&2
        exit 65
    fi
done
cd "$top" || exit 67
# ./ first: a path that starts with - is a name, not an option.
for path; do
    shift
    set -- "$@" "./$path"
done
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
    exec tar -cf - --sparse "$@"
fi
exec tar -cf - "$@"
