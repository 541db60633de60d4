"""What bench_ab.py and task_ab.py share: two checkouts of tsubmit, A and B, run
in turn on the same sshd nodes, each with a TSUBMIT_HOME of its own holding one
cluster per size."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import common as bench


def arguments(doc: str, *, sizes: str, rounds: int, subnet: int, optuna: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="a checkout (e.g. before a change)")
    parser.add_argument("b", type=Path, help="another checkout (e.g. after it)")
    parser.add_argument("--sizes", default=sizes, help=f"comma-separated node counts (default {sizes})")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--subnet", type=int, default=subnet, help="the nodes' subnet 127.0.S.0/24")
    if optuna:
        parser.add_argument("--optuna", action="store_true", help="also a warm `--executor optuna` submit")
    args = parser.parse_args()
    args.sizes = sorted({int(size) for size in args.sizes.split(",")})
    if os.geteuid() != 0:
        parser.error("run as root: the sshd nodes need it (see tests/harness/sshd.py)")
    return args


@dataclass
class Pair:
    bench_dir: Path
    wd: Path  # the working tree both submit
    nodes: bench.SshNodes
    checkouts: dict[str, Path]  # "A", "B"
    homes: dict[str, Path]

    def env(self, label: str) -> dict:
        """The environment of a `tsubmit` from checkout LABEL, with its own home."""
        return {**os.environ, "TSUBMIT_HOME": str(self.homes[label]), "NO_COLOR": "1",
                "PYTHONPATH": str(self.checkouts[label]), "TSUBMIT_KEEP_RUNS": "1"}


@contextlib.contextmanager
def started(args: argparse.Namespace, prefix: str):
    """The nodes started and both homes' clusters written; everything stopped and
    removed at the end."""
    bench_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    bench_dir.chmod(0o755)  # the test user reaches the working tree
    checkouts = {"A": args.a.resolve(), "B": args.b.resolve()}
    for checkout in checkouts.values():
        bench.compile_checkout(checkout)
    pair = Pair(bench_dir, bench.make_workdir(bench_dir), bench.SshNodes(max(args.sizes), subnet=args.subnet),
                checkouts, {label: bench.new_home(bench_dir, label.lower()) for label in checkouts})
    print(f"load average at start {bench.loadavg()}; A = {checkouts['A']}, B = {checkouts['B']}")
    try:
        pair.nodes.start()
        for home in pair.homes.values():
            for n in args.sizes:
                bench.write_cluster(home, f"c{n}", pair.nodes, pair.nodes.nodes[:n])
        yield pair
    finally:
        for home in pair.homes.values():
            bench.close_masters(home)
        pair.nodes.stop()
        shutil.rmtree(bench_dir, ignore_errors=True)
