#!/bin/sh
# Print one rank's log for `tsubmit logs` (Usage: read_log.sh LOG [LINES]). A shell script, not a Python
# module: the node's first python3 on PATH may be a broken shim, and a log
# that cannot be read must fail the host, never look empty (issue 16).
log=$1
case $log in
  "~/"*) log=$HOME/${log#"~/"} ;;
esac
if [ -r "$log" ] && [ -f "$log" ]; then
  # Only the last $2 lines when asked: a log of gigabytes is never carried whole.
  if [ -n "${2:-}" ]; then exec tail -n "$2" -- "$log"; fi
  exec cat -- "$log"
fi
if [ -e "$log" ]; then
  echo "cannot read the log $log: permission denied" >&2
elif [ "${log##*/}" = setup.log ] && [ -d "$(dirname -- "$log")" ]; then
  echo "no setup log at $log: this attempt ran no setup on this node" >&2
elif [ -d "$(dirname -- "$(dirname -- "$log")")" ]; then
  echo "no log at $log: this attempt of the rank never started on this node" >&2
else
  echo "no log at $log: the job's folder is not on this node (deleted, or another tsubmit_remote_root)" >&2
fi
exit 3
