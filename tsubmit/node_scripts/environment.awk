# The environment of a rank, from its launch.sh: the statements of the
# subshell that runs the command (between the lines "    (" and "    )"), but
# the last one, which is the command itself. A statement starts on a line that
# begins outside any quote; quotes are followed as sh reads them ('...' is
# literal, "..." and bare words take \ escapes), so a job variable whose value
# spans lines stays one statement, and so does a ( ... ) group that spans lines
# (parentheses are counted outside single quotes). A statement that starts with "(" runs in a
# subshell, so it cannot change the environment: it is left out (a container
# rank's env file is written by its launch, not again by a shell). Exit 3 when
# there is no such subshell.
BEGIN { quote = ""; continued = 0; count = 0; starts = 0; state = "before"; skipping = 0; depth = 0 }
state == "before" {
    if ($0 == "    (") state = "inside"
    next
}
state == "inside" && quote == "" && !continued && !depth && $0 == "    )" { state = "done"; exit }
state == "inside" {
    if (quote == "" && !continued && !depth && $0 ~ /^[ \t]*#/) next
    if (quote == "" && !continued && !depth) {
        start[++starts] = count + 1
        skipping = ($0 ~ /^[ \t]*\(/)
    }
    lines[++count] = skipping ? "" : $0
    scan($0)
}
END {
    if (state != "done" || starts == 0) exit 3
    for (i = 1; i < start[starts]; i++) print lines[i]
}
function scan(line,    i, c, n) {
    continued = 0
    n = length(line)
    for (i = 1; i <= n; i++) {
        c = substr(line, i, 1)
        if (quote == "\047") {
            if (c == "\047") quote = ""
            continue
        }
        if (c == "\\") {
            if (i == n) continued = 1
            i++
            continue
        }
        if (c == "(") depth++
        else if (c == ")" && depth > 0) depth--
        if (quote == "\"") {
            if (c == "\"") quote = ""
            continue
        }
        if (c == "\047" || c == "\"") quote = c
    }
}
