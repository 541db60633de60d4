#!/usr/bin/env python3
"""The bench's report: text and verdicts from the figures bench_submit.py
measured (its --json file), apart from measuring, so it can be run again:

    .venv/bin/python bench/report.py out.json

verdicts() says, for each of issue 17's targets, whether it was met (None:
not measured) and what was measured; report() formats the tables and the
verdict lines. Neither measures anything nor needs the nodes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Issue 17's targets; each gets a verdict line at the end of the report.
TARGETS = {
    "n16_warm": "N=16 `tsubmit run` warm within 1.5x of raw parallel ssh",
    "n16_cold": "N=16 `tsubmit run` cold within 2.0x of raw parallel ssh",
    "n16_cpu": "N=16 controller CPU per node at most 0.15 s (cold and warm)",
    "n8_warm": "N=8 `tsubmit run` warm within 1.5x of raw parallel ssh",
    "n1_torch_submit": "N=1 `tsubmit run` warm faster than torch-submit",
    "n1_floor": "N=1 `tsubmit run` at most 0.15 s above the ansible-runner floor, cold and warm",
    "n64": "N=64 runs clean, warm within 2.0x of raw parallel ssh",
    "torch_submit": "`tsubmit run` (cold and warm) faster than torch-submit at every N",
    "list": "`list` with 50 active jobs within 1.2x of the time with 1",
    "resubmit": "resubmitting an unchanged tree ships 0 archive bytes",
    "archive": "archiving never reads a byte of an ignored folder",
    "startup": "`--help` under 0.1 s",
}


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt_mb(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def load(path: Path) -> dict:
    """RESULTS as written by bench_submit.py --json, with the node and job
    counts (JSON object keys, so strings there) back as numbers."""
    results = json.loads(Path(path).read_text())
    for section in ("submit", "list"):
        if section in results:
            results[section] = {int(key): value for key, value in results[section].items()}
    return results


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def verdicts(results: dict) -> dict:
    """Every target measured in RESULTS: key -> (met, or None when not measured; what was measured)."""
    found = {}
    submit = results.get("submit", {})
    if submit:
        found.update(submit_verdicts(submit))
        compared = {n: entry for n, entry in submit.items() if "torch_submit_median" in entry}
        if compared:
            slower = [n for n, entry in compared.items()
                      if max(entry["cold_median"], entry["warm_median"]) >= entry["torch_submit_median"]]
            found["torch_submit"] = (not slower, "slower or equal at N=" + ",".join(map(str, slower))
                                     if slower else f"faster at N={','.join(map(str, compared))}")
        else:
            found["torch_submit"] = (None, "no --torch-submit")
    listing = results.get("list", {})
    if listing:
        if 50 in listing and 1 in listing:
            ratio = listing[50]["median"] / listing[1]["median"]
            found["list"] = (ratio <= 1.2, f"{ratio:.2f}x")
        else:
            found["list"] = (None, "50 jobs not measured")
    resubmit = results.get("resubmit")
    if resubmit:
        found["resubmit"] = (resubmit["resubmit_bytes"] == 0, f"{resubmit['resubmit_bytes']} B")
    arch = results.get("archive")
    if arch:
        untouched = (arch["files_opened_in_ignored"] == 0 and arch["dirs_listed_in_ignored"] == 0
                     and arch["entries_in_archive_from_ignored"] == 0)
        found["archive"] = (untouched, f"{arch['files_opened_in_ignored']} files opened, "
                                       f"{arch['dirs_listed_in_ignored']} folders listed")
    startup = results.get("startup")
    if startup:
        help_s, list_s = startup["help"]["median"], startup["list_empty"]["median"]
        found["startup"] = (help_s < 0.1, f"--help {help_s:.3f} s (empty list {list_s:.3f} s)")
    return found


def cpu_per_node(entry: dict, n: int, variant: str) -> float:
    """Controller CPU seconds of a submit (the tsubmit process tree), per node."""
    return entry["cpu"][f"{variant}_ctl_cpu"] / n


def submit_verdicts(submit: dict) -> dict:
    """Issue 17's submit targets, each (met or None when not measured, what was measured)."""
    def ratio(n, variant):
        return submit[n][f"{variant}_median"] / submit[n]["raw_median"]

    def unmeasured(n, what=""):
        return None, f"N={n} not measured{what}"

    verdicts = {}
    if 16 in submit:
        verdicts["n16_warm"] = (ratio(16, "warm") <= 1.5, f"{ratio(16, 'warm'):.2f}x")
        verdicts["n16_cold"] = (ratio(16, "cold") <= 2.0, f"{ratio(16, 'cold'):.2f}x")
        cold, warm = cpu_per_node(submit[16], 16, "cold"), cpu_per_node(submit[16], 16, "warm")
        verdicts["n16_cpu"] = (max(cold, warm) <= 0.15, f"{cold:.3f} s cold, {warm:.3f} s warm")
    else:
        verdicts.update(n16_warm=unmeasured(16), n16_cold=unmeasured(16), n16_cpu=unmeasured(16))
    verdicts["n8_warm"] = ((ratio(8, "warm") <= 1.5, f"{ratio(8, 'warm'):.2f}x") if 8 in submit
                           else unmeasured(8))
    if 1 in submit:
        entry = submit[1]
        if "torch_submit_median" in entry:
            verdicts["n1_torch_submit"] = (entry["warm_median"] < entry["torch_submit_median"],
                                           f"{entry['warm_median']:.2f} s against "
                                           f"{entry['torch_submit_median']:.2f} s")
        else:
            verdicts["n1_torch_submit"] = (None, "no --torch-submit")
        above = {variant: entry[f"{variant}_median"] - entry[f"floor_{variant}_median"]
                 for variant in ("cold", "warm")}
        verdicts["n1_floor"] = (max(above.values()) <= 0.15,
                                f"+{above['cold']:.2f} s cold, +{above['warm']:.2f} s warm")
    else:
        verdicts.update(n1_torch_submit=unmeasured(1), n1_floor=unmeasured(1))
    # Every round of a size ran clean, or the bench stopped there (Timed.check).
    verdicts["n64"] = ((ratio(64, "warm") <= 2.0, f"clean, warm {ratio(64, 'warm'):.2f}x") if 64 in submit
                       else unmeasured(64, " (--large)"))
    return verdicts


def describe_run(summary: dict, wall: float, started: float, top: int = 12) -> str:
    """Where one playbook run's time went: before, inside and after the playbook, and its longest tasks."""
    start, end = summary["playbook_start"], summary["playbook_end"]
    lines = []
    if start and end:
        lines.append(f"wall {wall:.2f} s = before the playbook's first event {start - started:.2f} s "
                     f"(python, archive, job store, runner and ansible-playbook start-up) + playbook "
                     f"{end - start:.2f} s + after {started + wall - end:.2f} s")
    rows = sorted(summary["tasks"], key=lambda row: -row["span"])[:top]
    lines.append(table(
        ["TASK", "SPAN s", "MEDIAN/HOST s", "MAX/HOST s", "OUTCOMES"],
        [[row["task"][:72], f"{row['span']:.2f}", f"{row['median_host']:.2f}", f"{row['max_host']:.2f}",
          ",".join(f"{k}={v}" for k, v in row["outcomes"].items())] for row in rows],
    ))
    total = sum(row["span"] for row in summary["tasks"])
    lines.append(f"sum of task spans {total:.2f} s over {len(summary['tasks'])} tasks")
    return "\n".join(lines)


def describe_task_cpu(records: list[dict], n: int) -> str:
    """Controller CPU of a submit, split: the tsubmit process itself, ansible-playbook's start-up, each
    task and ansible-playbook's exit (medians of the untimed profiled runs)."""
    def med(values):
        values = sorted(values)
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    names = list(dict.fromkeys(row["task"] for record in records for row in record["tasks"]))
    per_task = {name: med([row["cpu"] for record in records for row in record["tasks"]
                           if row["task"] == name]) for name in names}
    rows = [["tsubmit's own process (Python, imports, archive, job store, runner, events)",
             f"{med([r['tsubmit_cpu'] for r in records]):.3f}", "-"],
            ["ansible-playbook start-up (Python, Ansible, config, inventory, playbook)",
             f"{med([r['startup_cpu'] for r in records]):.3f}", "-"],
            ["ansible-playbook after the last task (its exit, runner's teardown)",
             f"{med([r['ansible_exit_cpu'] for r in records]):.3f}", "-"]]
    rows += [[name[:80], f"{cpu:.3f}", f"{cpu / n:.3f}"] for name, cpu in per_task.items()]
    rows.append(["the whole tsubmit process tree", f"{med([r['tree_cpu'] for r in records]):.3f}",
                 f"{med([r['tree_cpu'] for r in records]) / n:.3f}"])
    return table(["PART", "CPU s", "per node"], rows)


def report(results: dict) -> str:
    meta = results.get("meta", {})
    found = verdicts(results)
    lines = [f"# tsubmit benchmark, {meta.get('date', '?')}, {meta.get('cpus', '?')} CPUs, "
             f"rounds {meta.get('rounds', '?')}, medians",
             f"tsubmit from {meta.get('repo', '?')}" + (f" ({meta['label']})" if meta.get("label") else "")]
    if "tree_bytes" in meta:
        lines.append(f"working dir: {meta['tree_bytes'] / 1e6:.1f} MB in {meta['tree_files']} files shipped, "
                     "50 MB ignored (data/)")
    lines.append(f"load average at start {meta.get('loadavg_start', '?')}, at the end "
                 f"{meta.get('loadavg_end', '?')} (other work on the machine slows every figure alike; "
                 "the rounds alternate)")
    submit = results.get("submit", {})
    if submit:
        lines += submit_lines(submit)
    lines += other_lines(results)
    lines += ["", "## targets (machine shared: wall-time ratios move with the load; CPU seconds less)"]
    lines += [f"{verdict(found[key][0]):>7}  {TARGETS[key]}: {found[key][1]}" for key in TARGETS
              if key in found]
    return "\n".join(lines)


def submit_lines(submit: dict) -> list[str]:
    lines = ["", "## tsubmit run until every rank started (s)"]
    headers = ["N", "raw ssh", "tsubmit cold", "tsubmit warm", "optuna warm",
               "cold/raw", "warm/raw",
               "ctl CPU/node cold / warm", "floor cold", "floor warm", "floor/raw", "peak RSS MiB",
               "tree PSS MiB"]
    if any("torch_submit_median" in entry for entry in submit.values()):
        headers += ["torch-submit", "ranks started"]
    rows = []
    for n, entry in submit.items():
        raw = entry["raw_median"]
        row = [n, fmt_s(raw), fmt_s(entry["cold_median"]), fmt_s(entry["warm_median"]),
               fmt_s(entry.get("optuna_median")),
               f"{entry['cold_median'] / raw:.2f}x", f"{entry['warm_median'] / raw:.2f}x",
               f"{cpu_per_node(entry, n, 'cold'):.3f} / {cpu_per_node(entry, n, 'warm'):.3f}",
               fmt_s(entry["floor_cold_median"]), fmt_s(entry["floor_warm_median"]),
               f"{entry['floor_cold_median'] / raw:.1f}x / {entry['floor_warm_median'] / raw:.1f}x",
               fmt_mb(entry["rss_max_kib"]), fmt_mb(entry["tree_pss_peak_kib"])]
        if "torch_submit_median" in entry:
            started, codes = entry["torch_submit_started"], entry["torch_submit_codes"]
            figure = fmt_s(entry["torch_submit_median"])
            if min(started) < n or any(codes):
                figure += f" (exit {max(codes, key=abs)})"
            row += [figure, f"{min(started)}-{max(started)}/{n}"]
        elif len(headers) > len(row):
            row += ["-", "-"]
        rows.append(row)
    lines.append(table(headers, rows))
    lines.append("optuna warm: `tsubmit run --executor optuna` of the same command, the study store "
                 "started on the head")
    lines.append("floor: ansible_floor.py, two `raw: true` tasks per node through ansible-runner, with "
                 "the control masters closed first (cold) and reused (warm): the least any submit of two "
                 "round trips built this way costs")
    lines += ["", "CPU seconds per submit, controller (the command's process tree) / nodes (every sshd "
              "session and what it ran)"]
    rows = []
    for n, entry in submit.items():
        cpu = entry["cpu"]
        rows.append([n] + [f"{cpu[f'{v}_ctl_cpu']:.2f} / {cpu[f'{v}_node_cpu']:.2f}"
                           for v in ("raw", "cold", "warm")] + [entry["loadavg"]])
    lines.append(table(["N", "raw ssh", "tsubmit cold", "tsubmit warm", "load avg after"], rows))
    lines.append("ctl CPU/node: the controller's CPU seconds of one submit divided by N (target at N=16: "
                 "at most 0.15 s)")
    for n, entry in submit.items():
        if entry.get("task_cpu"):
            lines += ["", f"### controller CPU per part: N={n}, warm, medians of {len(entry['task_cpu'])} "
                      "untimed submits (bench/callbacks/task_cpu.py)",
                      describe_task_cpu(entry["task_cpu"], n)]
    largest = max(submit)
    for variant, summary in submit[largest].get("runs", {}).items():
        lines += ["", f"### where the time goes: N={largest}, {variant} (last round)",
                  describe_run(summary, submit[largest]["run_walls"][variant],
                               submit[largest]["run_started"][variant])]
    return lines


def other_lines(results: dict) -> list[str]:
    lines = []
    listing = results.get("list", {})
    if listing:
        lines += ["", "## tsubmit list with active jobs on 2 nodes (s)"]
        rows = [[count, fmt_s(entry["median"]), f"{entry['median'] / listing[min(listing)]['median']:.2f}x",
                 entry["status_runs"], fmt_mb(entry["rss_max_kib"]), fmt_s(entry["cpu_median"])]
                for count, entry in listing.items()]
        lines.append(table(["active jobs", "list", "vs 1 job", "status playbook runs", "peak RSS MiB",
                            "controller CPU s"], rows))
        last = listing[max(listing)]
        if last.get("run"):
            lines += ["", f"### where the time goes: list with {max(listing)} active jobs",
                      describe_run(last["run"], last["run_wall"], last["run_started"])]
    resubmit = results.get("resubmit")
    if resubmit:
        lines += ["", "## resubmitting an unchanged tree",
                  table(["nodes", "archive B", "1st submit shipped B", "resubmit shipped B",
                         "caches rewritten", "sent to (probe)", "1st s", "resubmit s"],
                        [[resubmit["nodes"], resubmit["archive_size"], resubmit["first_bytes"],
                          resubmit["resubmit_bytes"], f"{resubmit['rewritten_nodes']}/{resubmit['nodes']}",
                          f"{resubmit['sent_to']}/{resubmit['nodes']}",
                          fmt_s(resubmit["first_seconds"]), fmt_s(resubmit["resubmit_seconds"])]])]
    arch = results.get("archive")
    if arch:
        lines += ["", "## archive.pack with a 1 GB ignored folder (s)",
                  table(["tree", "pack", "opened in ignored", "listed in ignored", "entries from it"],
                        [["with 1 GB ignored", f"{arch['with_median']:.3f}", arch["files_opened_in_ignored"],
                          arch["dirs_listed_in_ignored"], arch["entries_in_archive_from_ignored"]],
                         ["without it", f"{arch['without_median']:.3f}", "-", "-", "-"]]),
                  f"(reading the ignored 1 GB once would cost {arch['hash_ignored_seconds']:.2f} s; "
                  f"pack opened {arch['files_opened_total']} files and listed "
                  f"{arch['dirs_listed_total']} folders in all)"]
    startup = results.get("startup")
    if startup:
        rows = [["tsubmit --help", fmt_s(startup["help"]["median"])],
                ["tsubmit list (no jobs)", fmt_s(startup["list_empty"]["median"])]]
        if "dry_run" in startup:
            rows.append([f"tsubmit run --dry-run ({startup['dry_run_cluster']})",
                         fmt_s(startup["dry_run"]["median"])])
        rows.append(["python -c pass", fmt_s(startup["python"]["median"])])
        lines += ["", "## start-up (s)", table(["command", "wall"], rows)]
    recovery = results.get("recovery")
    if recovery:
        relaunch, watched = recovery["relaunch"], recovery["watch"]
        beyond = relaunch["seconds"] - relaunch["node_timeout"]
        lines += ["", "## recovery",
                  table(["measured", "s"],
                        [[f"lost node to every rank of the next attempt running ({relaunch['nodes']} nodes "
                          f"+ {relaunch['spares']} spare)", fmt_s(relaunch["seconds"])],
                         ["  of which --node-timeout", fmt_s(relaunch["node_timeout"])],
                         [f"  of which the rest (a watch pass every {relaunch['watch_every']:g} s, stop, "
                          "relaunch)", fmt_s(beyond)],
                         [f"watch --once over {watched['jobs']} active jobs on {watched['nodes']} "
                          "nodes, wall", fmt_s(watched["wall_median"])],
                         ["  controller CPU", fmt_s(watched["cpu_median"])]]),
                  f"(goals: relaunch within node-timeout + 30 s: {verdict(beyond <= 30)}; "
                  f"a pass over 20 jobs under 5 s: {verdict(watched['wall_median'] < 5)})"]
    trips = results.get("round_trips")
    if trips:
        lines += ["", "## ssh invocations per task for one node (one -vvvv submit, N=1)"]
        rows = [[task[:72], trips["counts"][task]["exec"], trips["counts"][task]["put"]]
                for task in trips["order"]]
        rows.append(["total", sum(c["exec"] for c in trips["counts"].values()),
                     sum(c["put"] for c in trips["counts"].values())])
        lines.append(table(["TASK", "ssh exec", "sftp/scp put"], rows))
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: report.py RESULTS.json (written by bench_submit.py --json)", file=sys.stderr)
        return 2
    print(report(load(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
