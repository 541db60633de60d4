#!/usr/bin/env python3
"""Side-by-side: `tsubmit run` from two checkouts, interleaved on the same nodes, run by hand.

    git archive A | tar -x -C /tmp/a && git archive B | tar -x -C /tmp/b
    .venv/bin/python bench/bench_ab.py /tmp/a /tmp/b --sizes 1,8,16 --rounds 5
    .venv/bin/python bench/bench_ab.py /tmp/a /tmp/b --sizes 1,8 --optuna   # also an Optuna submit

On a machine shared with other work the wall times of two runs of
bench_submit.py made minutes apart move with the load; here every round
runs raw ssh, then A and B (the order alternating), cold then warm, so each
comparison is made under the same load. Prints medians of the wall time and
of the controller's CPU seconds (the tsubmit process tree, from wait4), per
submit and per node, and the ratios to raw ssh. Same nodes, working tree and
commands as bench_submit.py's submit section (whose helpers, in common.py
and references.py, it uses).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench
import side_by_side
from references import raw_cleanup, raw_submit
from report import table


def main() -> int:
    args = side_by_side.arguments(__doc__, sizes="1,8,16", rounds=5, subnet=41, optuna=True)
    figures: dict = {}
    with side_by_side.started(args, "tsb-ab-") as pair:
        nodes, wd, bench_dir, homes = pair.nodes, pair.wd, pair.bench_dir, pair.homes
        for n in args.sizes:
            members = nodes.nodes[:n]
            for round_index in range(args.rounds):
                bench.bump_tree(wd)
                archive = bench.archives.pack(wd, bench_dir / "raw-archives")
                seconds, tag, pids = raw_submit(nodes, members, archive.path.read_bytes())
                raw_cleanup(nodes, members, tag, pids)
                figures.setdefault((n, "raw"), []).append((seconds, 0.0))
                order = ["A", "B"] if round_index % 2 == 0 else ["B", "A"]
                for label in order:
                    env = pair.env(label)
                    for variant in ("cold", "warm"):
                        if variant == "cold":
                            bench.close_masters(homes[label])
                        bench.bump_tree(wd)
                        result = bench.run_timed([*bench.TSUBMIT, "run", "-c", f"c{n}", "--executor",
                                                  "distributed", "--", *bench.SLEEP], env=env, cwd=wd)
                        result.check(f"{label} tsubmit run (N={n})")
                        runs = figures.setdefault((n, f"{label} {variant}"), [])
                        runs.append((result.seconds, result.cpu_s))
                        bench.delete_jobs(env, [bench.job_id_of(result)])
                    if args.optuna:  # an Optuna search, warm: the study store on the head too
                        bench.bump_tree(wd)
                        command = [*bench.TSUBMIT, "run", "-c", f"c{n}", "--executor", "optuna", "--",
                                   *bench.SLEEP]
                        result = bench.run_timed(command, env=env, cwd=wd)
                        result.check(f"{label} tsubmit run --executor optuna (N={n})")
                        figures.setdefault((n, f"{label} optuna"), []).append((result.seconds, result.cpu_s))
                        bench.delete_jobs(env, [bench.job_id_of(result)])
                bench.log(f"N={n} round {round_index + 1}: raw {seconds:.2f} s, "
                          + ", ".join(f"{key[1]} {values[-1][0]:.2f} s / {values[-1][1]:.2f} s CPU"
                                      for key, values in figures.items() if key[0] == n and key[1] != "raw"))
    rows = []
    for (n, what), values in figures.items():
        wall = bench.median([value[0] for value in values])
        raw = bench.median([value[0] for value in figures[(n, "raw")]])
        cpu = bench.median([value[1] for value in values])
        rows.append([n, what, f"{wall:.2f}", f"{wall / raw:.2f}x", "-" if what == "raw" else f"{cpu:.2f}",
                     "-" if what == "raw" else f"{cpu / n:.3f}"])
    print(f"\nmedians of {args.rounds} rounds; load average at the end {bench.loadavg()}")
    print(table(["N", "run", "wall s", "/ raw", "controller CPU s", "CPU s per node"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
