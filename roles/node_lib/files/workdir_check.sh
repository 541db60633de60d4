# shellcheck shell=sh
# Sourced by the node scripts that read a job's workdir for a path the user
# named: fetch.sh (`tsubmit fetch`, tsubmit/nodes/node_scripts/) and
# sync_probe.sh (`--sync-dir`, roles/sync_dirs).
#
# leaves_workdir TOP PATH: how PATH (relative to the workdir TOP, resolved)
# leaves it, or nothing when it stays inside: PATH itself resolves outside, or a
# symbolic link under it points outside. A link is copied as a link, so one that
# points out would leave the copy pointing at whatever that is where it lands.
leaves_workdir() {
    real=$(realpath -m -- "$1/$2") || { echo "it cannot be resolved"; return; }
    case $real in
        "$1" | "$1"/*) ;;
        *) echo "it resolves to $real"; return ;;
    esac
    find "$1/$2" -type l -exec sh -c '
        top=$1; shift
        for link; do
            real=$(realpath -m -- "$link")
            case $real in
                "$top" | "$top"/*) ;;
                *) printf "%s points to %s\n" "${link#"$top"/}" "$real"; exit 1 ;;
            esac
        done' sh "$1" {} + | head -n 1
}
