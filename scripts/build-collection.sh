#!/bin/sh
# Build the collection tsubmit.cluster for Galaxy or Automation Hub:
#
#   sh scripts/build-collection.sh [OUTPUT_DIR]      (default: the current folder)
#
# Its sources live at the top of the repository (galaxy.yml, meta/, roles/,
# playbooks/, plugins/), where the repository's own README.md is tsubmit's;
# the collection's README is ansible_collections/tsubmit/cluster/README.md,
# beside the links that gather the rest. The build runs on a copy of that
# folder with its links followed, so Galaxy shows the collection's README.
set -eu
output="$(cd "${1:-.}" && pwd)"
cd "$(dirname "$0")/.."
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -RL ansible_collections/tsubmit/cluster/. "$stage"
ansible-galaxy collection build --output-path "$output" "$stage"
