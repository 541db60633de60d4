"""`tsubmit cluster check` on real sshd nodes: a healthy cluster, broken nodes
named with their remedies, -i inventories, an unreachable head and a head
whose rendezvous address cannot be bound; then, without nodes, how results
the nodes cannot produce here (refused connections, clock skew, a full disk)
are judged."""

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tsubmit.nodes.ansible_run import HostResult
from tsubmit.nodes.cluster_check import CONNECT_TASK, LISTEN_TASK, PROBE_TASK, build_report
from tsubmit.nodes.clusters import ClusterRef, Node, ResolvedCluster

e2e = pytest.mark.e2e

EXIT_USAGE, EXIT_LAUNCH = 2, 3
CORE_CHECKS = ("reachable", "python", "torchrun", "tcp")
CHECK_KEYS = {"reachable", "python", "torchrun", "gpus", "disk", "clock", "tcp", "container"}


def write_cluster(cli, nodes, members, per_host: dict | None = None, **extra_vars) -> Path:
    """Cluster `c` with the given nodes (head first), then per-host variables or extra hosts."""
    path = cli.write_cluster("c", nodes, members, **extra_vars)
    inventory = yaml.safe_load(path.read_text())
    for host, host_vars in (per_host or {}).items():
        inventory["all"]["hosts"].setdefault(host, {}).update(host_vars)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def table(stdout: str) -> dict[str, dict[str, str]]:
    """The check table: host -> column -> mark."""
    lines = stdout.splitlines()
    header = [column.lower() for column in lines[0].split()]
    assert header[0] == "host", stdout
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def assert_healthy(report: dict, hosts: list[str]) -> None:
    assert report["ok"] is True
    assert list(report["hosts"]) == hosts
    for host in hosts:
        checks = report["hosts"][host]
        assert set(checks) == CHECK_KEYS
        for outcome in checks.values():
            assert set(outcome) == {"status", "detail", "remedy"}
            assert outcome["status"] in ("ok", "warn", "skipped"), (host, outcome)
        for name in (*CORE_CHECKS, "disk", "clock"):
            assert checks[name]["status"] == "ok", (host, name, checks[name])
        assert checks["container"]["status"] == "skipped"


@e2e
@pytest.mark.parametrize("count", [2, 3])
def test_a_healthy_cluster_passes_every_check(cli, nodes, count):
    members = nodes.nodes[:count]
    write_cluster(cli, nodes, members)
    run = cli("cluster", "check", "c")
    assert run.code == 0, run.output
    rows = table(run.stdout)
    assert list(rows) == [node.name for node in members]
    for host, marks in rows.items():
        for name in CORE_CHECKS:
            assert marks[name] == "ok", (host, run.stdout)
    assert "container" not in rows[members[0].name]  # no engine declared: no column
    assert f"all checks passed on {count} host(s)" in run.stdout

    report = cli.ok("cluster", "check", "c", "-o", "json").json()
    assert_healthy(report, [node.name for node in members])
    head = members[0]
    assert report["head"] == head.name
    assert f"listening on {head.address}:" in report["hosts"][head.name]["tcp"]["detail"]
    for worker in members[1:]:
        assert f"reached {head.address}:" in report["hosts"][worker.name]["tcp"]["detail"]
    assert "torch " in report["hosts"][head.name]["torchrun"]["detail"]


@e2e
def test_an_unreachable_host_and_a_missing_torchrun_are_named_with_remedies(cli, nodes):
    address, port = nodes.unreachable_address()
    head, worker = nodes.nodes[:2]
    write_cluster(cli, nodes, [head, worker], per_host={
        worker.name: {"tsubmit_torchrun": "/nonexistent/torchrun"},
        "ghost": {"ansible_host": address, "ansible_port": port, "ansible_user": head.user},
    })
    run = cli("cluster", "check", "c")
    assert run.code == EXIT_LAUNCH, run.output
    assert "Traceback" not in run.output
    rows = table(run.stdout)
    assert rows["ghost"]["reachable"] == "FAIL"
    assert rows[worker.name]["torchrun"] == "FAIL"
    assert rows[worker.name]["reachable"] == rows[worker.name]["tcp"] == "ok"
    assert all(mark == "ok" for mark in rows[head.name].values()), run.stdout
    assert "Connection refused" in run.stdout
    assert f"ssh -p {port} {head.user}@{address}" in run.stdout
    assert f"{worker.name} torchrun: /nonexistent/torchrun not found" in run.stdout
    assert "set tsubmit_torchrun to its full path" in run.stdout

    report = cli("cluster", "check", "c", "-o", "json").json()
    assert report["ok"] is False
    ghost = report["hosts"]["ghost"]
    assert ghost["reachable"]["status"] == "fail"
    assert "check the address, port and user" in ghost["reachable"]["remedy"]
    assert {ghost[name]["status"] for name in CHECK_KEYS - {"reachable"}} == {"skipped"}
    assert report["hosts"][worker.name]["torchrun"]["status"] == "fail"
    assert report["hosts"][worker.name]["tcp"]["status"] == "ok"


@e2e
def test_an_inventory_given_with_dash_i_and_a_group(cli, nodes, tmp_path):
    path = nodes.write_inventory(tmp_path / "hosts.yml", group="trainers")
    run = cli("cluster", "check", "-i", str(path), "-g", "trainers", "-o", "json")
    assert run.code == 0, run.output
    assert_healthy(run.json(), [node.name for node in nodes.nodes])

    # a relative path works too: ansible-playbook runs in another folder
    plain = nodes.write_inventory(tmp_path / "plain.yml")
    run = cli("cluster", "check", "-i", "plain.yml", cwd=tmp_path)
    assert run.code == 0, run.output
    assert list(table(run.stdout)) == [node.name for node in nodes.nodes]
    assert plain.exists()


@e2e
@pytest.mark.parametrize("args", [
    ["-i", "/nonexistent/hosts.yml"],
    ["c", "-i", "/nonexistent/hosts.yml"],
    [],
    ["c", "-g", "trainers"],
])
def test_bad_usage_exits_2(cli, nodes, args):
    write_cluster(cli, nodes, nodes.nodes[:1])
    run = cli("cluster", "check", *args)
    assert run.code == EXIT_USAGE, run.output
    assert "Traceback" not in run.output
    assert run.stderr.startswith("tsubmit: "), run.stderr


@e2e
def test_a_head_that_cannot_listen_on_its_rendezvous_address(cli, nodes):
    # TEST-NET-1: no address of this machine, so binding it fails locally and
    # nothing is ever sent to it (the worker's connection is skipped).
    head, worker = nodes.nodes[:2]
    write_cluster(cli, nodes, [head, worker], per_host={head.name: {"tsubmit_rdzv_address": "192.0.2.1"}})
    run = cli("cluster", "check", "c")
    assert run.code == EXIT_LAUNCH, run.output
    assert "Traceback" not in run.output
    rows = table(run.stdout)
    assert rows[head.name]["tcp"] == "FAIL"
    assert rows[worker.name]["tcp"] == "-"
    assert "cannot listen on 192.0.2.1" in run.stdout
    assert f"set tsubmit_rdzv_address of {head.name}" in run.stdout

    report = cli("cluster", "check", "c", "-o", "json").json()
    assert report["hosts"][head.name]["tcp"]["status"] == "fail"
    assert report["hosts"][worker.name]["tcp"] == {
        "status": "skipped", "detail": f"the head ({head.name}) could not listen", "remedy": ""}
    for name in ("reachable", "python", "torchrun", "disk", "clock"):
        assert report["hosts"][worker.name][name]["status"] == "ok"


@pytest.fixture
def fake_bin(nodes):
    """A folder the test user can read, on the nodes' shared filesystem, for stand-in programs."""
    folder = nodes.nodes[1].remote_root / "fake-bin"
    folder.mkdir()
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o755)
    return path


@e2e
def test_other_torch_fewer_gpus_and_a_missing_container_engine(cli, nodes, fake_bin):
    # node2's torchrun runs under a "python" whose torch is 0.0.1, beside an
    # nvidia-smi that lists one GPU (the torchrun folder leads the job's PATH).
    python = executable(fake_bin / "python3", '#!/bin/sh\necho 0.0.1\n')
    torchrun = executable(fake_bin / "torchrun", f"#!{python}\n")
    executable(fake_bin / "nvidia-smi", "#!/bin/sh\necho 'GPU 0: Fake GPU (UUID: GPU-0)'\n")
    engine = executable(fake_bin / "podman", "#!/bin/sh\necho 'podman version 1.2.3'\n")
    head, worker, third = nodes.nodes
    write_cluster(cli, nodes, nodes.nodes, per_host={
        head.name: {"tsubmit_container_engine": str(engine)},
        worker.name: {"tsubmit_torchrun": str(torchrun), "tsubmit_gpus": 2,
                      "tsubmit_container_engine": "/nonexistent/docker"},
    })
    run = cli("cluster", "check", "c")
    assert run.code == EXIT_LAUNCH, run.output
    rows = table(run.stdout)
    assert rows[head.name]["container"] == "ok"
    assert rows[third.name]["container"] == "-"
    assert rows[worker.name]["container"] == "FAIL"
    assert rows[worker.name]["torchrun"] == "warn"
    assert rows[worker.name]["gpus"] == "FAIL"
    assert rows[head.name]["torchrun"] == rows[third.name]["torchrun"] == "ok"
    assert "torch 0.0.1 here" in run.stdout and "same torch version" in run.stdout
    assert "1 GPU(s) seen by nvidia-smi, tsubmit_gpus=2" in run.stdout
    assert "/nonexistent/docker not found" in run.stdout

    report = cli("cluster", "check", "c", "-o", "json").json()
    assert report["hosts"][head.name]["container"]["detail"] == "podman version 1.2.3"
    assert report["hosts"][worker.name]["torchrun"]["status"] == "warn"


@e2e
def test_an_unreachable_head_skips_the_workers_connections(cli, nodes):
    address, port = nodes.unreachable_address()
    worker = nodes.nodes[0]
    write_cluster(cli, nodes, [worker], per_host={
        "ghost": {"ansible_host": address, "ansible_port": port, "ansible_user": worker.user,
                  "tsubmit_head": True},
    })
    report = cli("cluster", "check", "c", "-o", "json").json()
    assert list(report["hosts"]) == ["ghost", worker.name]
    assert report["ok"] is False
    assert report["hosts"]["ghost"]["reachable"]["status"] == "fail"
    assert report["hosts"][worker.name]["tcp"] == {
        "status": "skipped", "detail": "the head (ghost) is unreachable", "remedy": ""}
    assert report["hosts"][worker.name]["python"]["status"] == "ok"


@e2e
def test_a_node_whose_python_does_not_run_still_reports_the_other_checks(cli, nodes):
    head, worker = nodes.nodes[:2]
    write_cluster(cli, nodes, [head, worker],
                  per_host={worker.name: {"tsubmit_python": "/nonexistent/python3",
                                          "tsubmit_torchrun": str(Path(nodes.python).with_name("torchrun"))}})
    report = cli("cluster", "check", "c", "-o", "json")
    assert report.code == EXIT_LAUNCH, report.output
    checks = report.json()["hosts"][worker.name]
    assert checks["python"]["status"] == "fail"
    assert checks["python"]["detail"] == "/nonexistent/python3 not found"
    assert "install python3 on the node" in checks["python"]["remedy"]
    for name in ("reachable", "torchrun", "disk", "clock"):  # the node's python3 probed the rest
        assert checks[name]["status"] == "ok", (name, checks[name])
    assert "torch " in checks["torchrun"]["detail"]
    assert checks["tcp"]["status"] == "fail" and "no python" in checks["tcp"]["detail"]
    assert all(outcome["status"] == "ok" for name, outcome in report.json()["hosts"][head.name].items()
               if name in (*CORE_CHECKS, "disk", "clock"))


# --- judging results the test nodes cannot produce (no nodes needed) -----------------------

NOW = 1_800_000_000.0


def probe(**changes) -> dict:
    """A healthy probe result, with some parts replaced."""
    result = {
        "python": {"found": True, "path": "/venv/bin/python", "version": "3.11.2", "error": ""},
        "torchrun": {"found": True, "path": "/venv/bin/torchrun", "error": ""},
        "torch": {"version": "2.13.0", "python": "/venv/bin/python", "error": ""},
        "gpus": {"nvidia_smi": "", "count": None, "error": ""},
        "disk": {"root": "/data/jobs", "free_kb": 50 * 1024 * 1024, "error": ""},
        "container": {"engine": "", "found": False, "path": "", "version": ""},
        "search_path": "/venv/bin:/usr/bin:/bin",
        "time": NOW,
    }
    result.update(changes)
    return result


def judge(probes: list[dict], connections: list[dict | None] | None = None, *, port=29400,
          windows: list[tuple[float, float]] | None = None):
    """The report for a head and workers h0, h1... with these probe and connection
    results, each probe started and answered at NOW unless WINDOWS says when."""
    nodes = [Node(f"h{rank}", rank, f"10.0.0.{rank + 1}", None, {"ansible_host": f"10.0.0.{rank + 1}"})
             for rank in range(len(probes))]
    cluster = ResolvedCluster(ClusterRef("c", []), nodes, "first host of group all")
    results = {}
    for rank, node_probe in enumerate(probes):
        outputs = {PROBE_TASK: {"stdout": "motd noise\n" + json_line(node_probe)}}
        if rank == 0:
            outputs[LISTEN_TASK] = {"stdout": json_line({"port": port} if port else {"error": "no"})}
        elif connections and connections[rank - 1] is not None:
            outputs[CONNECT_TASK] = {"stdout": json_line(connections[rank - 1])}
        results[nodes[rank].name] = HostResult("ok", "", outputs)
    times = {f"h{rank}": window for rank, window in enumerate(windows or [(NOW, NOW)] * len(probes))}
    return build_report(cluster, results, times)


def json_line(value: dict) -> str:
    return json.dumps(value)


def test_refused_and_timed_out_connections_fail_with_the_rendezvous_remedy():
    report = judge([probe(), probe(), probe()], [
        {"status": "refused", "detail": "connection refused"},
        {"status": "timeout", "detail": "no answer within 5s"},
    ])
    assert not report.ok
    assert report.hosts["h0"]["tcp"].status == "ok"
    for host in ("h1", "h2"):
        tcp = report.hosts[host]["tcp"]
        assert tcp.status == "fail"
        assert tcp.remedy == ("the worker cannot reach 10.0.0.1:29400: set tsubmit_rdzv_address to the "
                              "head's address on a network the workers share, or open the firewall")
    assert "no answer within 5s" in report.hosts["h2"]["tcp"].detail


def test_clock_skew_above_five_seconds_fails():
    report = judge([probe(), probe(time=NOW + 2), probe(time=NOW - 7.5)], [{"status": "ok"}] * 2)
    assert report.hosts["h0"]["clock"].status == "ok"
    assert report.hosts["h1"]["clock"].status == "ok"
    clock = report.hosts["h2"]["clock"]
    assert clock.status == "fail" and clock.detail.startswith("-7.50s")
    assert "synchronise the clocks" in clock.remedy


def test_a_node_time_within_the_probes_round_trip_is_latency_not_skew():
    """A loaded controller or a slow link: the probe started 20 s before its
    answer arrived. A node clock read anywhere in between is right; only one
    outside it is skew, by how far it is outside."""
    window = (NOW - 20, NOW)
    report = judge([probe(time=NOW - 17.7), probe(time=NOW - 30), probe(time=NOW + 6)],
                   [{"status": "ok"}] * 2, windows=[window] * 3)
    clock = report.hosts["h0"]["clock"]
    assert clock.status == "ok" and clock.detail == "+0.00s against this machine (20.00s round trip)"
    assert report.hosts["h1"]["clock"].status == "fail"
    assert report.hosts["h1"]["clock"].detail.startswith("-10.00s")
    assert report.hosts["h2"]["clock"].status == "fail"
    assert report.hosts["h2"]["clock"].detail.startswith("+6.00s")


def test_less_than_a_gib_free_fails_and_a_different_torch_only_warns():
    low = probe(disk={"root": "/full", "free_kb": 512 * 1024, "error": ""},
                torch={"version": "2.1.0", "python": "/venv/bin/python", "error": ""})
    report = judge([probe(), probe(), low], [{"status": "ok"}] * 2)
    disk = report.hosts["h2"]["disk"]
    assert disk.status == "fail" and disk.detail == "512.0 MiB free in /full"
    torchrun = report.hosts["h2"]["torchrun"]
    assert torchrun.status == "warn" and "torch 2.1.0 here, 2.13.0 on 2 other node(s)" in torchrun.detail
    assert report.hosts["h0"]["torchrun"].status == report.hosts["h1"]["torchrun"].status == "ok"
    assert report.count("fail") == 1 and report.count("warn") == 1


def test_warnings_alone_keep_the_cluster_ok():
    other = probe(torch={"version": "2.12.0", "python": "/venv/bin/python", "error": ""})
    report = judge([probe(), other], [{"status": "ok"}])
    assert report.ok
    # two nodes, two versions: the head's is the reference
    assert report.hosts["h0"]["torchrun"].status == "ok"
    assert report.hosts["h1"]["torchrun"].status == "warn"


def test_a_node_without_any_python_answers_with_the_python_s_error_and_its_clock(tmp_path):
    """The probe's launcher (plugins/action/probe.py) run by this machine's sh on a
    PATH that holds no python: the python check fails with its remedy, the clock is
    judged, the checks only python could answer are skipped."""
    repo = Path(__file__).resolve().parents[2]
    action = ast.parse((repo / "plugins" / "action" / "probe.py").read_text())
    [launch] = [node.value.value for node in action.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "CHECK_LAUNCH"]
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("grep", "tail", "tr", "date"):
        (bare / tool).symlink_to(shutil.which(tool))
    request = json.dumps({"check": {}, "remote_root": str(tmp_path), "path_prefix": ""})
    probe_file = repo / "roles" / "preflight" / "files" / "probe.py"
    answered = subprocess.run(["/bin/sh", "-c", launch, str(probe_file), "python3", request],
                              env={"PATH": str(bare), "HOME": str(tmp_path)}, capture_output=True, text=True,
                              timeout=30, check=True)
    bare_probe = json.loads(answered.stdout.splitlines()[-1])
    assert bare_probe["python"] == {"found": False, "error": "python3 not found"}
    now = bare_probe["time"]
    report = judge([probe(), bare_probe], [None], windows=[(now - 1, now + 1)] * 2)
    checks = report.hosts["h1"]
    assert checks["python"].status == "fail" and checks["python"].detail == "python3 not found"
    assert "install python3 on the node" in checks["python"].remedy
    assert checks["clock"].status == "ok" and checks["reachable"].status == "ok"
    assert checks["tcp"].status == "fail"
    for name in ("torchrun", "gpus", "disk", "container"):
        assert checks[name].status == "skipped", (name, checks[name])
