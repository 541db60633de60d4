# tsubmit forward, on the node: is something listening on PORT where a forward
# to 127.0.0.1:PORT reaches it? Read from the kernel's socket tables, without
# connecting (a debugger may take only one client). Run as
# `sh -c SCRIPT tsubmit PORT`. Prints one line:
#   ok            a listener on 127.0.0.1, 0.0.0.0 or ::
#   other ADDR... listeners on the port, none reachable as 127.0.0.1 (hex, as
#                 /proc/net/tcp* write them)
#   none          nothing listens on the port
#   unknown       no /proc/net/tcp on this system: not checked
set -u
[ -r /proc/net/tcp ] || { echo unknown; exit 0; }
port=$(printf '%04X' "$1")
# Field 2 is ADDRESS:PORT in hex, field 4 the state (0A: LISTEN).
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v port="$port" '
    $4 == "0A" {
        split($2, local_address, ":")
        if (local_address[2] != port) next
        address = local_address[1]
        if (address == "0100007F" || address == "00000000" ||
            address == "00000000000000000000000000000000" ||
            address == "0000000000000000FFFF00000100007F") reachable = 1
        else others = others " " address
    }
    END {
        if (reachable) print "ok"
        else if (others != "") print "other" others
        else print "none"
    }'
