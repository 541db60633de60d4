"""The bench's submit section: `tsubmit run` cold and warm against raw ssh,
the ansible-runner floor and torch-submit, alternating within each round;
then untimed runs for the whole tree's peak memory and the controller CPU
per task. Fills ctx.results["submit"]; report.py turns it into text."""

from __future__ import annotations

import argparse
import glob
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from artifacts import count_round_trips, read_task_cpu, task_cpu_env, task_summary
from common import (
    FLOOR,
    SLEEP,
    SLEEPERS,
    TSUBMIT,
    SelfCpuSampler,
    SshNodes,
    TreeSampler,
    archives,
    bump_tree,
    close_masters,
    delete_jobs,
    job_id_of,
    kill_node_processes,
    loadavg,
    log,
    median,
    new_home,
    node_cpu,
    run_dirs,
    run_timed,
    tsubmit_env,
    write_cluster,
)
from references import raw_cleanup, raw_submit, torch_submit_run, torch_submit_setup

CPU_KEYS = ("raw_ctl_cpu", "raw_node_cpu", "cold_ctl_cpu", "cold_node_cpu", "warm_ctl_cpu",
            "warm_node_cpu")
PROFILED_RUNS = 3  # untimed warm submits per size with the task_cpu callback


@dataclass
class Context:
    args: argparse.Namespace
    nodes: SshNodes
    bench_dir: Path
    wd: Path
    homes: list[Path] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    cleanup: list = field(default_factory=list)



def section_submit(ctx: Context, sizes: list[int]) -> None:
    args, nodes, wd = ctx.args, ctx.nodes, ctx.wd
    home = new_home(ctx.bench_dir, "sub")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    for n in sizes:
        write_cluster(home, f"c{n}", nodes, nodes.nodes[:n])
    ts = None
    if args.torch_submit:
        if Path(args.torch_submit).exists():
            ts = torch_submit_setup(args.torch_submit, ctx.bench_dir, nodes, sizes)
        else:
            log(f"--torch-submit {args.torch_submit} does not exist: torch-submit skipped")
    pack_dir = ctx.bench_dir / "raw-archives"
    out = ctx.results.setdefault("submit", {})
    for n in sizes:
        members = nodes.nodes[:n]
        figures = {"raw": [], "cold": [], "warm": [], "floor_cold": [], "floor_warm": [], "optuna": [],
                   "raw_node_cpu": [], "raw_ctl_cpu": [],
                   "cold_node_cpu": [], "cold_ctl_cpu": [], "warm_node_cpu": [], "warm_ctl_cpu": [],
                   "torch_submit": [], "rss_kib": [], "ts_started": [],
                   "ts_rss_kib": [], "ts_codes": []}
        last_runs = {}
        for round_index in range(args.rounds):
            steps = ["raw", "tsubmit"] + (["torch_submit"] if ts else [])
            shift = round_index % len(steps)
            steps = steps[shift:] + steps[:shift]
            for step in steps:
                bump_tree(wd)
                if step == "raw":
                    archive = archives.pack(wd, pack_dir)
                    cpu_before, usage_before = node_cpu(nodes), resource.getrusage(resource.RUSAGE_CHILDREN)
                    seconds, tag, pids = raw_submit(nodes, members, archive.path.read_bytes())
                    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                    figures["raw"].append(seconds)
                    figures["raw_node_cpu"].append(node_cpu(nodes) - cpu_before)
                    figures["raw_ctl_cpu"].append(usage.ru_utime + usage.ru_stime
                                                  - usage_before.ru_utime - usage_before.ru_stime)
                    raw_cleanup(nodes, members, tag, pids)
                    log(f"N={n} round {round_index + 1}: raw ssh {seconds:.2f} s ({archive.size} B archive)")
                elif step == "tsubmit":
                    for variant in ("cold", "warm"):
                        if variant == "cold":
                            close_masters(home)
                        else:
                            bump_tree(wd)
                        before = run_dirs(home, "submit")
                        cpu_before = node_cpu(nodes)
                        result = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--",
                                            *SLEEP], env=env, cwd=wd).check(f"tsubmit run (N={n})")
                        figures[f"{variant}_node_cpu"].append(node_cpu(nodes) - cpu_before)
                        figures[f"{variant}_ctl_cpu"].append(result.cpu_s)
                        new = sorted(run_dirs(home, "submit") - before)
                        last_runs[variant] = (new[-1], result)
                        figures[variant].append(result.seconds)
                        figures["rss_kib"].append(result.maxrss_kib)
                        job = job_id_of(result)
                        log(f"N={n} round {round_index + 1}: tsubmit run ({variant}) {result.seconds:.2f} s, "
                            f"peak RSS {result.maxrss_kib / 1024:.0f} MiB")
                        delete_jobs(env, [job])
                    # An Optuna search (warm): the study store on the head, the
                    # worker helpers in the launch's one stream (issue 26, item 17).
                    bump_tree(wd)
                    result = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "optuna", "--",
                                        *SLEEP], env=env, cwd=wd)
                    result.check(f"tsubmit run --executor optuna (N={n})")
                    figures["optuna"].append(result.seconds)
                    log(f"N={n} round {round_index + 1}: tsubmit run --executor optuna (warm) "
                        f"{result.seconds:.2f} s")
                    delete_jobs(env, [job_id_of(result)])
                    inventory = home / "config" / "clusters" / f"c{n}.yml"
                    for variant in ("cold", "warm"):
                        if variant == "cold":
                            close_masters(home)
                        result = run_timed([sys.executable, str(FLOOR), str(inventory), str(n)],
                                           env=env).check(f"ansible floor (N={n})")
                        figures[f"floor_{variant}"].append(result.seconds)
                        log(f"N={n} round {round_index + 1}: ansible-runner floor ({variant}) "
                            f"{result.seconds:.2f} s")
                else:
                    ts_dirs_before = set(glob.glob("/tmp/torch_submit_job_*"))
                    kill_node_processes(members, SLEEPERS)  # leftovers of any tool
                    result = torch_submit_run(ts, n, wd)
                    time.sleep(0.5)  # let the last node's detached command start
                    started = sum(bool(nodes.processes_of(node, r"train\.py")) for node in members)
                    figures["torch_submit"].append(result.seconds)
                    figures["ts_started"].append(started)
                    figures["ts_rss_kib"].append(result.maxrss_kib)
                    figures["ts_codes"].append(result.code)
                    log(f"N={n} round {round_index + 1}: torch-submit {result.seconds:.2f} s, exit "
                        f"{result.code}, {started}/{n} nodes running the command")
                    if result.code != 0:
                        # Its errors are rich tracebacks in boxes; the plain lines say what failed.
                        plain = [line for line in (result.stdout + result.stderr).splitlines()
                                 if line.strip() and line[0] not in "│╭╰"]
                        log("torch-submit said:\n  " + "\n  ".join(plain[-12:]))
                    kill_node_processes(members, SLEEPERS + "|torch_submit_job_")
                    # Its job folder is /tmp/torch_submit_job_<uuid> on every node (one
                    # filesystem here): remove the ones this run made.
                    for path in set(glob.glob("/tmp/torch_submit_job_*")) - ts_dirs_before:
                        shutil.rmtree(path, ignore_errors=True)
        # Peak memory of the whole process tree (PSS), in one untimed warm run.
        bump_tree(wd)
        sampler = TreeSampler()
        result = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                           env=env, cwd=wd, sampler=sampler).check("tsubmit run (sampled)")
        delete_jobs(env, [job_id_of(result)])
        task_cpu = profile_tasks(env, n, wd)
        entry = {
            **{key: figures[key] for key in ("raw", "cold", "warm", "floor_cold", "floor_warm", "optuna")},
            **{f"{key}_median": median(figures[key])
               for key in ("raw", "cold", "warm", "floor_cold", "floor_warm", "optuna")},
            "cpu": {key: median(figures[key]) for key in CPU_KEYS},
            "cpu_rounds": {key: figures[key] for key in CPU_KEYS},
            "task_cpu": task_cpu,
            "loadavg": loadavg(),
            "rss_max_kib": max(figures["rss_kib"]), "tree_pss_peak_kib": sampler.peak_kib,
            "tree_pss_processes": sampler.peak_processes,
            "runs": {variant: task_summary(run_dir) for variant, (run_dir, _) in last_runs.items()},
            "run_walls": {variant: result.seconds for variant, (_, result) in last_runs.items()},
            "run_started": {variant: result.started for variant, (_, result) in last_runs.items()},
        }
        if ts:
            entry.update(torch_submit=figures["torch_submit"],
                         torch_submit_median=median(figures["torch_submit"]),
                         torch_submit_started=figures["ts_started"], torch_submit_codes=figures["ts_codes"],
                         torch_submit_rss_max_kib=max(figures["ts_rss_kib"]))
        out[n] = entry
    if args.round_trips:
        bump_tree(wd)
        trips = count_round_trips(home, env, f"c{sizes[0]}", wd)
        delete_jobs(env, [trips["job"]])
        ctx.results["round_trips"] = trips



def profile_tasks(env: dict, n: int, wd: Path) -> list[dict]:
    """Controller CPU per task of PROFILED_RUNS untimed warm submits on N nodes
    (callbacks/task_cpu.py), each with what the rest of the tsubmit process
    tree spent."""
    records = []
    with tempfile.TemporaryDirectory(prefix="tsb-cpu-") as folder:
        for index in range(PROFILED_RUNS):
            bump_tree(wd)
            output = Path(folder) / f"{index}.json"
            own = SelfCpuSampler()
            result = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                               env=task_cpu_env(env, output), cwd=wd, sampler=own)
            result.check("tsubmit run (task CPU)")
            delete_jobs(env, [job_id_of(result)])
            records.append(read_task_cpu(output, result.cpu_s, own.seconds))
    log(f"N={n}: controller CPU per task recorded in {len(records)} untimed submits")
    return records
