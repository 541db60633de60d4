"""The bench's other sections: resubmitting an unchanged tree, `tsubmit list`
with many active jobs, archiving a tree with a large ignored folder, and
start-up. Each fills its part of ctx.results; report.py turns it into text."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from artifacts import probe_reports, task_summary
from common import (
    LONG_SLEEP,
    SLEEP,
    TSUBMIT,
    archives,
    bump_tree,
    delete_jobs,
    job_id_of,
    kill_node_processes,
    log,
    median,
    new_home,
    run_dirs,
    run_timed,
    tsubmit_env,
    write_cluster,
)
from section_submit import Context


def section_resubmit(ctx: Context, n: int) -> None:
    nodes, wd = ctx.nodes, ctx.wd
    home = new_home(ctx.bench_dir, "rs")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    members = nodes.nodes[:n]
    write_cluster(home, f"c{n}", nodes, members)
    bump_tree(wd)
    digest = archives.pack(wd, ctx.bench_dir / "raw-archives").digest

    def cache_state():
        state = {}
        for node in members:
            path = node.remote_root / ".archives" / f"{digest}.tar.gz"
            st = path.stat()
            state[node.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        return state

    jobs = []
    first = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                      env=env, cwd=wd).check("first submit")
    jobs.append(job_id_of(first))
    after_first = cache_state()
    before = run_dirs(home, "submit")
    second = run_timed([*TSUBMIT, "run", "-c", f"c{n}", "--executor", "distributed", "--", *SLEEP],
                       env=env, cwd=wd).check("resubmit")
    jobs.append(job_id_of(second))
    after_second = cache_state()
    probes = probe_reports(sorted(run_dirs(home, "submit") - before)[-1])
    shipped = sum(after_second[name][2] for name in after_first
                  if after_first[name][:2] != after_second[name][:2])
    delete_jobs(env, jobs)
    ctx.results["resubmit"] = {
        "nodes": n, "archive_size": next(iter(after_first.values()))[2],
        "first_bytes": sum(state[2] for state in after_first.values()),
        "resubmit_bytes": shipped,
        "rewritten_nodes": sum(after_first[name][:2] != after_second[name][:2] for name in after_first),
        # What each node's probe said: the launch role sends the archive only to
        # nodes that hold neither it nor the unpacked tree.
        "sent_to": sum(not (probe["archive_present"] or probe["tree_present"]) for probe in probes),
        "first_seconds": first.seconds, "resubmit_seconds": second.seconds,
    }
    log(f"resubmit: {shipped} B shipped on resubmit (first submit: "
        f"{ctx.results['resubmit']['first_bytes']} B), archive sent to {ctx.results['resubmit']['sent_to']} "
        f"node(s) by the probes' account")


def section_list(ctx: Context, counts: list[int]) -> None:
    args, nodes, wd = ctx.args, ctx.nodes, ctx.wd
    home = new_home(ctx.bench_dir, "ls")
    ctx.homes.append(home)
    env = tsubmit_env(home)
    members = nodes.nodes[:2]
    write_cluster(home, "c2", nodes, members)
    bump_tree(wd)
    active = 0
    out = ctx.results.setdefault("list", {})
    try:
        for count in counts:
            while active < count:
                run_timed([*TSUBMIT, "run", "-c", "c2", "--executor", "distributed", "--", *LONG_SLEEP],
                          env=env, cwd=wd).check("submit for list")
                active += 1
            log(f"list: {active} active jobs submitted")
            seconds, rss, cpu = [], [], []
            for _ in range(args.rounds):
                result = run_timed([*TSUBMIT, "list"], env=env).check("tsubmit list")
                running = sum(" running " in line for line in result.stdout.splitlines())
                if running != count:
                    raise RuntimeError(f"tsubmit list shows {running} running jobs, expected {count}:\n"
                                       f"{result.stdout}")
                seconds.append(result.seconds)
                rss.append(result.maxrss_kib)
                cpu.append(result.cpu_s)
            before = run_dirs(home, "status")
            result = run_timed([*TSUBMIT, "list"], env=env).check("tsubmit list")
            status_runs = sorted(run_dirs(home, "status") - before)
            out[count] = {"seconds": seconds, "median": median(seconds), "rss_max_kib": max(rss),
                          "cpu_median": median(cpu),
                          "status_runs": len(status_runs),
                          "run": task_summary(status_runs[-1]) if status_runs else None,
                          "run_wall": result.seconds, "run_started": result.started}
            log(f"list with {count} active jobs: {median(seconds):.2f} s")
    finally:
        # 50 deletes are 50 playbook runs; the jobs are stopped here by pid, and
        # stopping the nodes removes their folders.
        killed = kill_node_processes(members, r"time\.sleep\(3600\)")
        log(f"list: stopped {killed} processes of the list jobs")


def section_archive(ctx: Context) -> None:
    args = ctx.args
    base = Path(tempfile.mkdtemp(prefix="tsb-arch-", dir="/tmp"))
    ctx.cleanup.append(base)
    with_big, without = base / "with-ignored", base / "without"
    for tree in (with_big, without):
        shutil.copytree(ctx.wd, tree, ignore=shutil.ignore_patterns("data"))
    (with_big / ".gitignore").write_text((with_big / ".gitignore").read_text() + "big/\n")
    (without / ".gitignore").write_text((without / ".gitignore").read_text() + "big/\n")
    (with_big / "big" / "nested").mkdir(parents=True)
    subprocess.run(["truncate", "-s", "1G", str(with_big / "big" / "blob.bin")], check=True)
    subprocess.run(["truncate", "-s", "1M", str(with_big / "big" / "nested" / "part.bin")], check=True)
    size = (with_big / "big" / "blob.bin").stat().st_size

    def pack_once(tree: Path) -> float:
        dest = Path(tempfile.mkdtemp(prefix="dest-", dir=base))
        start = time.perf_counter()
        archives.pack(tree, dest)
        seconds = time.perf_counter() - start
        shutil.rmtree(dest)
        return seconds

    times = {"with": [], "without": []}
    for round_index in range(max(args.rounds, 3)):
        order = ["with", "without"] if round_index % 2 == 0 else ["without", "with"]
        for which in order:
            times[which].append(pack_once(with_big if which == "with" else without))

    # What pack() touches under the ignored folder: every file it opens goes
    # through archive._open_file, every folder it lists through os.scandir.
    opened, listed = [], []
    big = str(with_big / "big")
    real_open, real_scandir = archives._open_file, os.scandir

    def spy_open(path):
        opened.append(str(path))
        return real_open(path)

    def spy_scandir(path="."):
        listed.append(str(path))
        return real_scandir(path)

    archives._open_file, os.scandir = spy_open, spy_scandir
    try:
        dest = Path(tempfile.mkdtemp(prefix="dest-", dir=base))
        packed = archives.pack(with_big, dest)
    finally:
        archives._open_file, os.scandir = real_open, real_scandir
    with tarfile_names(packed.path) as names:
        in_archive = [name for name in names if name == "big" or name.startswith("big/")]
    touched_files = [p for p in opened if p == big or p.startswith(big + "/")]
    touched_dirs = [p for p in listed if p == big or p.startswith(big + "/")]

    # What reading it would have cost: hashing the sparse file once.
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(with_big / "big" / "blob.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    read_cost = time.perf_counter() - start

    ctx.results["archive"] = {
        "ignored_bytes": size, "with": times["with"], "without": times["without"],
        "with_median": median(times["with"]), "without_median": median(times["without"]),
        "files_opened_total": len(opened), "dirs_listed_total": len(listed),
        "files_opened_in_ignored": len(touched_files), "dirs_listed_in_ignored": len(touched_dirs),
        "entries_in_archive_from_ignored": len(in_archive), "hash_ignored_seconds": read_cost,
    }
    log(f"archive: with 1 GB ignored {median(times['with']):.3f} s, "
        f"without {median(times['without']):.3f} s; "
        f"opened {len(touched_files)} files / listed {len(touched_dirs)} folders under it")


@contextlib.contextmanager
def tarfile_names(path: Path):
    import tarfile

    with tarfile.open(path) as tar:
        yield tar.getnames()


def section_startup(ctx: Context, dry_run_cluster: str | None) -> None:
    rounds = max(ctx.args.rounds, 5)
    empty = new_home(ctx.bench_dir, "empty")
    ctx.homes.append(empty)
    env = tsubmit_env(empty)
    figures: dict[str, list[float]] = {"help": [], "list_empty": [], "dry_run": []}
    sub_home = ctx.homes[0] if ctx.homes else None
    for _ in range(rounds):
        figures["help"].append(run_timed([*TSUBMIT, "--help"], env=env).check("tsubmit --help").seconds)
        figures["list_empty"].append(run_timed([*TSUBMIT, "list"], env=env).check("tsubmit list").seconds)
        if dry_run_cluster and sub_home:
            figures["dry_run"].append(run_timed(
                [*TSUBMIT, "run", "-c", dry_run_cluster, "--dry-run", "--executor", "distributed", "--",
                 *SLEEP],
                env=tsubmit_env(sub_home), cwd=ctx.wd).check("tsubmit run --dry-run").seconds)
    # The interpreter alone, for scale.
    python = [run_timed([sys.executable, "-c", "pass"], env=env).seconds for _ in range(rounds)]
    ctx.results["startup"] = {
        **{key: {"seconds": values, "median": median(values)} for key, values in figures.items() if values},
        "python": {"seconds": python, "median": median(python)},
        "dry_run_cluster": dry_run_cluster,
    }
    log(f"startup: --help {median(figures['help']):.3f} s, empty list {median(figures['list_empty']):.3f} s")

