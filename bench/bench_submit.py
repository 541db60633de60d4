#!/usr/bin/env python3
"""Benchmark of tsubmit's remote paths against real sshd nodes, run by hand.

Never part of CI nor a timed test: it starts up to 16 (64 with --large) sshd
nodes on loopback with the test harness and takes minutes. Run it as root
from the repository, with the project's venv:

    .venv/bin/python bench/bench_submit.py            # N = 1, 4, 16; 5 rounds
    .venv/bin/python bench/bench_submit.py --quick    # N = 1, 4; 2 rounds (smoke run)
    .venv/bin/python bench/bench_submit.py --large    # adds N = 64
    .venv/bin/python bench/bench_submit.py --torch-submit /tmp/ts-venv/bin/torch-submit

Sections (figures are medians over alternating rounds of the same run):

* submit: wall time of `tsubmit run -c CLUSTER --executor distributed -- python
  -c "import time; time.sleep(30)"` (it returns once every rank's launch script
  recorded its pid), with the SSH control masters closed first (cold) and
  right after, reusing them (warm); each round changes one small file, so the
  archive is new and shipped. Against it, a raw parallel-ssh reference: one
  ssh per node at once, the same tar.gz on stdin, unpacked into a fresh folder
  under the node's remote root, the command started detached (setsid, output
  to a file, pid printed). And the ansible-runner floor (ansible_floor.py): two
  empty round trips per node through ansible-runner, cold and warm like the
  submit. Optionally the original torch-submit (its nodes' user then has bash
  for a shell: ensure_bash_user).
* list: `tsubmit list` with 1, 10 and 50 active jobs on a 2-node cluster.
* resubmit: bytes shipped when the same tree is submitted again (the node's
  archive cache file must be left untouched: same inode and mtime).
* archive: `tsubmit.local.archive.pack` of a tree with a 1 GB ignored folder (a sparse
  file) against the same tree without it, and a record of what it opened.
  Besides, a few untimed warm submits per size with the task_cpu callback
  (callbacks/task_cpu.py) split the controller's CPU into tsubmit's own
  process, ansible-playbook's start-up and each task.
* startup: `tsubmit --help`, `tsubmit list` with no jobs, `tsubmit run --dry-run`.
* recovery: the time from losing a node to every rank of the next attempt
  running (3 nodes and a spare), and a `tsubmit watch` pass over 20 active
  jobs on 8 nodes (section_recovery.py).

Measuring and reporting are apart: the sections (section_submit.py,
sections.py, with common.py, references.py and artifacts.py) fill one dict
of figures, which --json writes out; report.py turns it into the tables and
the verdict lines, here at the end or again later from that file
(`bench/report.py out.json`).

Jobs are deleted after each measurement (outside the timed part); at the end
the nodes are stopped, which also kills anything left on them, and the
temporary folders are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, SshNodes, close_masters, compile_checkout, loadavg, log, make_workdir, tree_size
from references import ensure_bash_user
from report import report
from section_recovery import section_recovery
from section_submit import Context, section_submit
from sections import section_archive, section_list, section_resubmit, section_startup


def _interrupt(*_):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1,4, 2 rounds, list up to 10 jobs")
    parser.add_argument("--large", action="store_true", help="also N=64")
    parser.add_argument("--sizes", help="comma-separated node counts instead (e.g. 16 or 1,4,16,64)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per figure (default 5; 2 with --quick)")
    parser.add_argument("--subnet", type=int, default=30, help="loopback subnet 127.0.S.0/24 of the nodes")
    parser.add_argument("--torch-submit", metavar="PATH",
                        help="an installed torch-submit executable to compare")
    parser.add_argument("--sections", default="submit,resubmit,list,archive,startup",
                        help="comma-separated subset of submit,resubmit,list,archive,startup,recovery")
    parser.add_argument("--no-round-trips", dest="round_trips", action="store_false",
                        help="skip the -vvvv submit that counts ssh invocations per task")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--label", help="what is measured, for the report (e.g. the commit)")
    args = parser.parse_args()
    args.rounds = args.rounds or (2 if args.quick else 5)
    sizes = [1, 4] if args.quick else [1, 4, 16]
    if args.large:
        sizes.append(64)
    if args.sizes:
        sizes = sorted({int(size) for size in args.sizes.split(",")})
    list_counts = [1, 10] if args.quick else [1, 10, 50]
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if os.geteuid() != 0:
        parser.error("run as root: the sshd nodes need it (see tests/harness/sshd.py)")

    # SIGTERM unwinds like Ctrl-C, so the nodes and folders are cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    compile_checkout()
    bench_dir = Path(tempfile.mkdtemp(prefix="tsb-bench-", dir="/tmp"))
    bench_dir.chmod(0o755)
    wd = make_workdir(bench_dir)
    needs_nodes = sections & {"submit", "resubmit", "list", "recovery"}
    count = max(sizes) if "submit" in sections else 4
    if "recovery" in sections:
        count = max(count, 8)
    nodes = SshNodes(count, subnet=args.subnet, **({"user": ensure_bash_user()} if args.torch_submit else {}))
    ctx = Context(args, nodes, bench_dir, wd)
    tree_bytes, tree_files = tree_size(wd)
    ctx.results["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                           "rounds": args.rounds, "label": args.label, "repo": str(REPO),
                           "tree_bytes": tree_bytes, "tree_files": tree_files, "loadavg_start": loadavg()}
    try:
        if needs_nodes:
            log(f"starting {count} sshd nodes on 127.0.{args.subnet}.0/24")
            nodes.start()
        if "submit" in sections:
            section_submit(ctx, sizes)
        if "resubmit" in sections:
            section_resubmit(ctx, 4)
        if "list" in sections:
            section_list(ctx, list_counts)
        if "archive" in sections:
            section_archive(ctx)
        if "startup" in sections:
            section_startup(ctx, f"c{max(sizes)}" if "submit" in sections else None)
        if "recovery" in sections:
            section_recovery(ctx)
        ctx.results["meta"].update(loadavg_end=loadavg(), seconds=round(time.monotonic() - began))
        if args.json:  # first, so a failing report loses no measurement
            Path(args.json).write_text(json.dumps(ctx.results, indent=1, default=str))
        print(report(ctx.results))
        print(f"\n(total bench time {ctx.results['meta']['seconds']} s)")
    finally:
        for home in ctx.homes:
            with contextlib.suppress(Exception):
                close_masters(home)
        nodes.stop()
        for home in ctx.homes:
            shutil.rmtree(home, ignore_errors=True)
        for path in ctx.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(bench_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
