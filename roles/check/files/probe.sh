#!/bin/sh
# Usage: probe.sh PYTHON TORCHRUN REMOTE_ROOT CONTAINER_ENGINE [MODULE_PYTHON]
# Probe a node for `tsubmit cluster check` and print one JSON object (its last
# line of output): the python and its version, torchrun on the PATH a job
# sees (the folders of PYTHON and TORCHRUN first) and the torch version of its
# interpreter, the GPUs nvidia-smi lists, the free space in the remote root
# (created when missing), the container engine when one is declared (empty
# CONTAINER_ENGINE: none), the interpreter Ansible's Python modules would use
# (MODULE_PYTHON, the inventory's ansible_python_interpreter, else the one its
# discovery picks: the first of its fallback list on the login PATH), and last
# the node's clock. POSIX sh, so a node without python still answers.
set -u
python=$1
torchrun=$2
root=$3
engine=$4
module_python=${5:-}

expand_home() { # a leading ~ is the user's home, as in the other roles
    case $1 in
        "~") printf '%s' "$HOME" ;;
        "~"/*) printf '%s/%s' "$HOME" "${1#"~/"}" ;;
        *) printf '%s' "$1" ;;
    esac
}
json() { # $1 as a JSON string; control characters become spaces
    printf '"%s"' "$(printf '%s' "$1" | tr '\000-\037' ' ' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}
bool() { # true when $1 is not empty
    if [ -n "$1" ]; then printf true; else printf false; fi
}
number() { # $1 when it is a whole number, else null
    case $1 in '' | *[!0-9]*) printf null ;; *) printf '%s' "$1" ;; esac
}
last_line() { # the last non-empty line of $1
    printf '%s\n' "$1" | sed -e '/^[[:space:]]*$/d' | tail -n 1
}
find_program() { # the full path of a program, as the job's PATH finds it
    case $1 in
        */*) if [ -f "$1" ] && [ -x "$1" ]; then printf '%s' "$1"; fi ;;
        *) found=$(command -v -- "$1" 2>/dev/null) || found=
           case $found in /*) printf '%s' "$found" ;; esac ;;
    esac
}

# Ansible's modules: what the inventory declares, else what discovery would
# pick on the login PATH (before the job's folders are put first), in the
# order of ansible-core's INTERPRETER_PYTHON_FALLBACK.
case $module_python in auto | auto_legacy | auto_silent | auto_legacy_silent) module_python= ;; esac
module_declared=$(bool "$module_python")
if [ -z "$module_python" ]; then
    for candidate in python3.13 python3.12 python3.11 python3.10 python3.9 python3.8 \
        /usr/bin/python3 python3; do
        module_python=$(find_program "$candidate")
        [ -n "$module_python" ] && break
    done
fi
module_python=$(expand_home "$module_python")
module_error=
if [ -z "$module_python" ]; then
    module_error="no python found"
elif ! output=$("$module_python" -c 'import sys' 2>&1); then
    module_error="$module_python does not run: $(printf '%s\n' "$output" | sed -e '/^[[:space:]]*$/d' | head -n 1)"
fi

python=$(expand_home "$python")
torchrun=$(expand_home "$torchrun")
root=$(expand_home "$root")
# The job's PATH starts with the folders of the node's python and torchrun.
prefix=
for program in "$python" "$torchrun"; do
    case $program in */*) prefix="$prefix${prefix:+:}${program%/*}" ;; esac
done
PATH="$prefix${prefix:+:}$PATH"
export PATH

# python
python_path=$(find_program "$python")
python_version=
python_error=
if [ -n "$python_path" ]; then
    if output=$("$python_path" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>&1); then
        python_version=$(last_line "$output")
    else
        python_error="$python_path does not run: $(last_line "$output")"
        python_path=
    fi
else
    python_error="$python not found"
fi

# torchrun, and torch as its interpreter (else the node's python) imports it
torchrun_path=$(find_program "$torchrun")
torchrun_error=
[ -n "$torchrun_path" ] || torchrun_error="$torchrun not found"
torch_python=$python_path
if [ -n "$torchrun_path" ]; then
    shebang=$(head -n 1 "$torchrun_path" 2>/dev/null | tr -d '\r') || shebang=
    case $shebang in
        "#!"*)
            interpreter=${shebang#"#!"}
            interpreter=${interpreter# }
            interpreter=${interpreter%% *}
            case ${interpreter##*/} in
                python*) [ -x "$interpreter" ] && torch_python=$interpreter ;;
            esac ;;
    esac
fi
torch_version=
torch_error=
if [ -n "$torch_python" ]; then
    if output=$("$torch_python" -c 'import torch; print(torch.__version__)' 2>&1); then
        torch_version=$(last_line "$output")
    else
        torch_error="$torch_python cannot import torch: $(last_line "$output")"
    fi
fi

# GPUs
smi_path=$(find_program nvidia-smi)
gpus=
smi_error=
if [ -n "$smi_path" ]; then
    if output=$("$smi_path" --list-gpus 2>&1); then
        gpus=$(printf '%s\n' "$output" | grep -c '^GPU ')
    else
        smi_error="nvidia-smi failed: $(last_line "$output")"
    fi
fi

# free space in the remote root
free_kb=
root_error=
if output=$(mkdir -p -- "$root" 2>&1); then
    resolved=$(cd -- "$root" 2>/dev/null && pwd -P) && root=$resolved
    # -P: one line per file system; the fourth field is the space available.
    free_kb=$(df -Pk -- "$root" 2>/dev/null | awk 'NR == 2 { print $4 }')
    [ -n "$free_kb" ] || root_error="df cannot read the free space of $root"
else
    root_error="cannot create $root: $(last_line "$output")"
fi

# the container engine, when the cluster declares one
engine_path=
engine_version=
if [ -n "$engine" ]; then
    engine_path=$(find_program "$(expand_home "$engine")")
    if [ -n "$engine_path" ]; then
        engine_version=$(last_line "$("$engine_path" --version 2>&1 | head -n 1)")
    fi
fi

# The clock last, closest to the moment the controller receives the result.
now=$(date +%s.%N 2>/dev/null) || now=
case $now in '' | *[!0-9.]* | *. ) now=$(date +%s) ;; esac

printf '\n{"python": {"found": %s, "path": %s, "version": %s, "error": %s}, ' \
    "$(bool "$python_path")" "$(json "$python_path")" "$(json "$python_version")" \
    "$(json "$python_error")"
printf '"torchrun": {"found": %s, "path": %s, "error": %s}, ' \
    "$(bool "$torchrun_path")" "$(json "$torchrun_path")" "$(json "$torchrun_error")"
printf '"torch": {"version": %s, "python": %s, "error": %s}, ' \
    "$(json "$torch_version")" "$(json "$torch_python")" "$(json "$torch_error")"
printf '"gpus": {"nvidia_smi": %s, "count": %s, "error": %s}, ' \
    "$(json "$smi_path")" "$(number "$gpus")" "$(json "$smi_error")"
printf '"disk": {"root": %s, "free_kb": %s, "error": %s}, ' \
    "$(json "$root")" "$(number "$free_kb")" "$(json "$root_error")"
printf '"container": {"engine": %s, "found": %s, "path": %s, "version": %s}, ' \
    "$(json "$engine")" "$(bool "$engine_path")" "$(json "$engine_path")" "$(json "$engine_version")"
printf '"module_python": {"declared": %s, "path": %s, "error": %s}, ' \
    "$module_declared" "$(json "$module_python")" "$(json "$module_error")"
printf '"search_path": %s, "time": %s}\n' "$(json "$PATH")" "$now"
exit 0
