#!/bin/sh
# Usage: start_rank.sh ROOT JOB_ID DIGEST ATTEMPT_DIR start|stage
#
# Run by tsubmit.cluster.run_script from a private folder under ROOT/JOB_ID that holds
# launch.sh, environment.sh, job.json and, when the node had neither the archive nor the
# job's tree, workdir.tar.gz. Everything a rank needs happens here, in the one
# SSH round trip that brought the files:
#
# 1. a shipped archive joins the node's cache, ROOT/.archives/DIGEST.tar.gz;
# 2. the archive is unpacked into ROOT/JOB_ID/workdir unless it already is:
#    into a folder beside it, then one rename, so nodes sharing a filesystem
#    (an NFS home) never see a half-written tree (the first rename wins); the
#    folders a relaunch synced here before (ROOT/JOB_ID/synced) go in first;
# 3. job.json goes into the tree's .tsubmit/, launch.sh and environment.sh
#    into ATTEMPT_DIR, an Optuna worker's helper modules (optuna-lib-NAME)
#    into ROOT/JOB_ID/optuna-lib/NAME (on its PYTHONPATH);
# 4. with a setup (--setup: setup.vars, setup.sh and run_setup.sh came too),
#    run_setup.sh runs it, or skips it where it already succeeded; the lock it
#    leaves on fd 9 goes with the rank (see run_setup.sh);
# 5. with `start`, launch.sh starts the rank and prints "PID STARTTICKS EPOCH"
#    (`stage` stops before, for the pre-launch hooks). An attempt that already
#    started prints its pid again instead.
set -eu
root=$1 job_id=$2 digest=$3 attempt_dir=$4 action=$5
bundle=$(dirname "$0")
archive=$root/.archives/$digest.tar.gz
tree=$root/$job_id/workdir

# The folders a relaunch synced before this node held the tree (roles/sync_dirs,
# listed in synced.dirs) replace the archive's. Copied, by hard links where it
# can, not moved: another rank of this filesystem may be unpacking too (the
# rename that wins removes them).
synced=$root/$job_id/synced
take_synced() {
    [ -f "$synced.dirs" ] || return 0
    into=$(realpath -- "$1") || return 1
    while IFS= read -r dir; do
        case $(realpath -m -- "$into/$dir") in
            "$into"/*) ;;
            *) echo "synced folder $dir leaves the workdir (a link in the archive)" >&2; return 1 ;;
        esac
        rm -rf -- "${into:?}/$dir" && mkdir -p -- "$(dirname -- "$into/$dir")" || return 1
        cp -al -- "$synced/$dir" "$into/$dir" 2>/dev/null \
            || { rm -rf -- "${into:?}/$dir" && cp -a -- "$synced/$dir" "$into/$dir"; } || return 1
    done <"$synced.dirs"
}

if [ -f "$bundle/workdir.tar.gz" ]; then mv -f "$bundle/workdir.tar.gz" "$archive"; fi
if [ ! -d "$tree" ]; then
    mkdir -p "$root/$job_id"
    staging=$(mktemp -d "$tree.unpacking.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    if ! tar -xzf "$archive" -C "$staging" --no-same-owner; then
        # tar says only "Wrote only N of M bytes" of a disk that is full.
        df -Pk "$root" | awk 'NR == 2 && $4 < 1024 { exit 1 }' || echo "$root: No space left on device" >&2
        exit 1
    fi
    mkdir -p "$staging/.tsubmit"
    chmod 0755 "$staging"
    if ! take_synced "$staging"; then
        [ -d "$tree" ] || exit 1  # unless another rank of this filesystem unpacked it meanwhile
    fi
    if mv -T "$staging" "$tree" 2>/dev/null; then
        rm -rf "$synced" "$synced.dirs"
    else
        [ -d "$tree" ]
    fi
fi
# The tree is the job's: by a restart, its .tsubmit or job.json may be a link
# the job put there. Neither is followed: a .tsubmit that is not a folder is
# replaced by one, and job.json is renamed over whatever is there.
if [ -L "$tree/.tsubmit" ] || [ ! -d "$tree/.tsubmit" ]; then
    rm -f "$tree/.tsubmit"
    mkdir "$tree/.tsubmit"
fi
mv -fT "$bundle/job.json" "$tree/.tsubmit/job.json"
mkdir -p "$attempt_dir"
chmod 0700 "$attempt_dir"
mv -f "$bundle/launch.sh" "$bundle/environment.sh" "$attempt_dir/"
# The GPU lease helper and the process helpers it imports, when the rank
# leases GPUs (launch.sh runs it).
for helper in "$bundle/gpu_lease.py" "$bundle/tsubmit_procs.py"; do
    if [ -f "$helper" ]; then mv -f "$helper" "$attempt_dir/"; fi
done
for helper in "$bundle"/optuna-lib-*; do
    [ -f "$helper" ] || continue
    mkdir -p "$root/$job_id/optuna-lib"
    mv -f "$helper" "$root/$job_id/optuna-lib/${helper##*/optuna-lib-}"
done

if [ -f "$bundle/setup.vars" ] && [ ! -s "$attempt_dir/pid" ]; then
    read -r setup_key setup_marker <"$bundle/setup.vars" || [ -n "${setup_marker:-}" ]
    mkdir -p "$root/.setup"
    exec 9>>"$root/.setup/$setup_key.lock"
    # The rank's marker: a rollback's stop finds the setup's processes too.
    TSUBMIT_RANK_MARKER=$setup_marker /bin/sh "$bundle/run_setup.sh" \
        "$root/.setup/$setup_key" "$bundle/setup.sh" "$attempt_dir" "$tree"
fi

if [ "$action" = start ]; then
    if [ -s "$attempt_dir/pid" ]; then
        cat "$attempt_dir/pid"
    else
        /bin/sh "$attempt_dir/launch.sh" start
    fi
fi
