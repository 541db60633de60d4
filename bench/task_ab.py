#!/usr/bin/env python3
"""Side-by-side controller CPU per task: `tsubmit run` from two checkouts, run by hand.

    git archive A | tar -x -C /tmp/a && git archive B | tar -x -C /tmp/b
    .venv/bin/python bench/task_ab.py /tmp/a /tmp/b --sizes 1,8 --rounds 3

Where bench_ab.py times whole submits, this runs untimed warm submits with
the task_cpu callback (callbacks/task_cpu.py), A and B alternating on the
same nodes, and prints the median CPU seconds of each task and of the parts
around them (tsubmit's own process, ansible-playbook's start-up and exit),
so a change to one task is measured on that task under the same load.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bench
import side_by_side
from artifacts import read_task_cpu, task_cpu_env
from report import table


def parts(record: dict) -> dict:
    """One record's CPU seconds by part, tasks by name."""
    found = {"tsubmit's own process": record["tsubmit_cpu"],
             "ansible-playbook start-up": record["startup_cpu"]}
    for task in record["tasks"]:
        found[task["task"]] = found.get(task["task"], 0.0) + task["cpu"]
    found["ansible-playbook exit"] = record["ansible_exit_cpu"]
    found["the whole tree"] = record["tree_cpu"]
    return found


def main() -> int:
    args = side_by_side.arguments(__doc__, sizes="1,8", rounds=3, subnet=43)
    records: dict = {}
    with side_by_side.started(args, "tsb-tab-") as pair:
        wd, bench_dir = pair.wd, pair.bench_dir
        for n in args.sizes:
            for round_index in range(args.rounds + 1):  # the first round warms the masters, not counted
                order = ["A", "B"] if round_index % 2 == 0 else ["B", "A"]
                for label in order:
                    env = pair.env(label)
                    bench.bump_tree(wd)
                    output = bench_dir / f"{label}-{n}-{round_index}.json"
                    own = bench.SelfCpuSampler()
                    argv = [*bench.TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--",
                            *bench.SLEEP]
                    result = bench.run_timed(argv, env=task_cpu_env(env, output), cwd=wd, sampler=own)
                    result.check(f"{label} tsubmit run (N={n})")
                    bench.delete_jobs(env, [bench.job_id_of(result)])
                    if round_index:
                        records.setdefault((n, label), []).append(
                            parts(read_task_cpu(output, result.cpu_s, own.seconds)))
                bench.log(f"N={n} round {round_index}, load {bench.loadavg()}")
    print(f"\nmedians of {args.rounds} warm submits each; load average at the end {bench.loadavg()}")
    for n in args.sizes:
        names = list(dict.fromkeys(name for label in "AB" for run in records[(n, label)] for name in run))
        rows = []
        for name in names:
            a, b = ([run.get(name, 0.0) for run in records[(n, label)]] for label in "AB")
            rows.append([name[:70], f"{bench.median(a):.3f}", f"{bench.median(b):.3f}",
                         f"{bench.median(a) / n:.3f}", f"{bench.median(b) / n:.3f}"])
        print(f"\nN = {n}")
        print(table(["part", "A CPU s", "B CPU s", "A per node", "B per node"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
