#!/bin/sh
# Prepare a machine (CI container or dev box) for the e2e tests' sshd nodes.
#
# tests/harness/sshd.py starts real sshd processes on loopback addresses and
# reaches them as a light test user.  It creates the user itself, but it cannot
# install packages, and a failed import of torch by that user is easier to read
# here than in the middle of a test session.  Idempotent; run as root.
#
# Usage: scripts/setup-ssh-nodes.sh [PYTHON]   (default: .venv/bin/python)
set -eu

user="${TSUBMIT_TEST_USER:-tsubmit-test}"
python="${1:-$(dirname "$0")/../.venv/bin/python}"
# The absolute path, as the test user must resolve it from /.
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"

if [ "$(id -u)" != 0 ]; then
    echo "setup-ssh-nodes: run as root" >&2
    exit 1
fi

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
fi
mkdir -p /run/sshd

if ! id "$user" >/dev/null 2>&1; then
    useradd --system --user-group --create-home --home-dir "/var/lib/$user" \
        --shell /bin/sh "$user"
fi
# With UsePAM no, sshd rejects accounts whose password starts with '!' (locked),
# which is what useradd leaves; '*' is "no password" without the lock.
if grep -q "^$user:!" /etc/shadow; then
    usermod --password '*' "$user"
fi

# A second unprivileged user, for the tests of GPU leases shared by two users
# of one node (tests/e2e/test_gpu_leases.py); it never logs in over ssh.
second="${TSUBMIT_TEST_USER2:-tsubmit-test2}"
if ! id "$second" >/dev/null 2>&1; then
    useradd --system --user-group --create-home --home-dir "/var/lib/$second" \
        --shell /bin/sh "$second"
fi

if ! runuser -u "$user" -- "$python" -c 'import torch' 2>/dev/null; then
    echo "setup-ssh-nodes: user $user cannot run '$python -c \"import torch\"';" \
        "every folder above the venv must be traversable (o+x) by that user" >&2
    exit 1
fi
echo "setup-ssh-nodes: ready (users $user and $second, python $python)"
