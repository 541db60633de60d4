"""bench/report.py: the report and its verdicts come from the figures alone, so
a bench run's --json file can be reported again, and a verdict follows from
the numbers it names. The figures here are made up, shaped like the bench's."""

import importlib.util
import json
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "bench" / "report.py"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def submit_entry(n, raw, cold, warm, cold_cpu, warm_cpu, floor_cold=None, floor_warm=None):
    return {
        "raw_median": raw, "cold_median": cold, "warm_median": warm,
        "floor_cold_median": floor_cold or raw, "floor_warm_median": floor_warm or raw,
        "cpu": {"raw_ctl_cpu": 0.1 * n, "raw_node_cpu": 0.03 * n, "cold_ctl_cpu": cold_cpu,
                "cold_node_cpu": 0.1 * n, "warm_ctl_cpu": warm_cpu, "warm_node_cpu": 0.1 * n},
        "loadavg": "1.00 1.00 1.00", "rss_max_kib": 57 * 1024, "tree_pss_peak_kib": 300 * 1024,
        "task_cpu": [{"tsubmit_cpu": 0.3, "startup_cpu": 0.5, "ansible_exit_cpu": 0.1, "tree_cpu": warm_cpu,
                      "tasks": [{"task": "preflight : Probe the node", "cpu": 0.05 * n}]}],
        "runs": {}, "run_walls": {}, "run_started": {},
    }


def results():
    return {
        "meta": {"date": "2026-12-01 12:00", "cpus": 2, "rounds": 3, "label": "test", "repo": "/repo",
                 "tree_bytes": 2_000_000, "tree_files": 12, "loadavg_start": "1", "loadavg_end": "2"},
        # N=1: 0.10 s above the floor cold, 0.30 s warm; N=16: 1.40x warm, 2.50x cold, 0.125 s CPU per node
        "submit": {1: submit_entry(1, 0.3, 1.0, 1.0, 1.0, 1.0, floor_cold=0.9, floor_warm=0.7),
                   16: submit_entry(16, 2.0, 5.0, 2.8, 2.0, 1.6)},
        "list": {1: {"median": 1.0, "status_runs": 1, "rss_max_kib": 1, "cpu_median": 0.5},
                 50: {"median": 1.1, "status_runs": 1, "rss_max_kib": 1, "cpu_median": 0.5}},
        "resubmit": {"nodes": 4, "archive_size": 10, "first_bytes": 40, "resubmit_bytes": 0,
                     "rewritten_nodes": 0, "sent_to": 0, "first_seconds": 2.0, "resubmit_seconds": 1.5},
    }


def test_verdicts_follow_from_the_figures(report):
    found = report.verdicts(results())
    assert found["n16_warm"] == (True, "1.40x")
    assert found["n16_cold"] == (False, "2.50x")
    assert found["n16_cpu"] == (True, "0.125 s cold, 0.100 s warm")
    assert found["n1_floor"] == (False, "+0.10 s cold, +0.30 s warm")
    assert found["n8_warm"] == (None, "N=8 not measured")
    assert found["list"] == (True, "1.10x")
    assert found["resubmit"] == (True, "0 B")
    assert "archive" not in found and "startup" not in found  # not measured: no verdict line


def test_the_report_is_the_same_again_from_the_json_file(report, tmp_path, capsys):
    path = tmp_path / "out.json"
    path.write_text(json.dumps(results()))  # what --json writes: the node counts become strings
    assert report.load(path)["submit"].keys() == {1, 16}
    assert report.main([str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed == report.report(results()) + "\n"
    lines = printed.splitlines()
    assert "    MET  N=16 `tsubmit run` warm within 1.5x of raw parallel ssh: 1.40x" in lines
    assert "NOT MET  N=16 `tsubmit run` cold within 2.0x of raw parallel ssh: 2.50x" in lines
    assert "    n/a  N=8 `tsubmit run` warm within 1.5x of raw parallel ssh: N=8 not measured" in lines
    assert any(line.startswith("preflight : Probe the node") and "0.800" in line for line in lines)


def test_report_without_a_file_says_how_to_run_it(report, capsys):
    assert report.main([]) == 2
    assert "usage: report.py RESULTS.json" in capsys.readouterr().err
