#!/bin/sh
# Set up this checkout on a fresh Debian/Ubuntu machine: system packages, a
# virtualenv in .venv with tsubmit (editable) and torch, and with --test what
# the test suite needs (sshd for the test nodes, the light test user) and the
# docs site's tools (the docs extra).
#
# Usage: scripts/setup.sh [--test]        (as root, or with sudo available)
#
# The venv is built from the system python3 (/usr/bin/python3), not a
# per-user pyenv: the test nodes run jobs as another user, who must be able to
# execute the venv's interpreter.
set -eu
cd "$(dirname "$0")/.."

with_tests=false
[ "${1:-}" = "--test" ] && with_tests=true

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Each step says what it does before it does it: some take minutes, silently.
say() { echo "setup: $*"; }

packages="python3 python3-venv git procps"
# sshd for the test nodes; cron for `tsubmit cron`; podman (with runc and
# uidmap for rootless use by the test user) for the container tests.
$with_tests && packages="$packages openssh-server openssh-client cron podman runc uidmap postgresql"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    say "installing system packages:$missing (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv .venv"
    /usr/bin/python3 -m venv .venv
fi
# torch is pinned: an unpinned torch pulls a CUDA build of several GB.
extras=""
launchers=""
$with_tests && extras="[test,docs]"
# The tests run jobs that bring their own launcher (Lightning, HF accelerate);
# in the same pip call as the pinned torch, so pip keeps that torch.
$with_tests && launchers="lightning accelerate"
say "installing torch (CPU), tsubmit and their dependencies into .venv with pip (minutes, the first time)"
# shellcheck disable=SC2086  # one package per word
.venv/bin/python -m pip install -q "torch==2.13.0" numpy $launchers -e ".$extras"
# What an Optuna job needs on the nodes (here the nodes use this venv too).
say "installing what Optuna jobs need (optuna, grpcio, optuna-dashboard, psycopg)"
.venv/bin/python -m pip install -q "optuna>=4.3" grpcio protobuf optuna-dashboard "psycopg[binary]"

if $with_tests; then
    say "preparing this machine for the test nodes (sshd, the test users)"
    as_root sh scripts/setup-ssh-nodes.sh "$PWD/.venv/bin/python"
fi
echo "setup: ready; tsubmit is .venv/bin/tsubmit"
