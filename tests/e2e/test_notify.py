"""Notifications (tsubmit/jobs/notify.py) delivered to real endpoints: a local HTTP
server that apprise's json:// posts to, and a local SMTP server (aiosmtpd) that
its mailto:// sends to; the jobs run on real sshd nodes. And why a job failed:
the first failed rank, its host, address and exit code (the worker's under
torchrun), in status, list, run --wait and the messages."""

import json
import re
import socket
import subprocess

import pytest
import yaml

from tests.harness import eventually
from tests.harness.jobs import job_id_of, job_processes, watch_until
from tests.harness.lost_nodes import NODE_TIMEOUT, launch

pytestmark = pytest.mark.e2e


def assert_masked(text: str, *urls: str) -> None:
    for url in urls:
        assert url not in text and "s3cr3t" not in text, text


@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_a_crash_names_the_rank_that_failed_first_everywhere_and_is_notified(cli, nodes, workdir, webhook,
                                                                             mailbox, executor):
    cli.write_cluster("c", nodes, nodes.nodes, tsubmit_gpus=1)
    run = cli("run", "-c", "c", "--executor", executor, "--name", f"crash-{executor}", "--wait",
              "--notify", webhook.url, "--notify", mailbox.url, "--notify-on", "end",
              "--workdir", str(workdir), "--", "python", "crash_first.py", "1", "7")
    assert run.code == 1, run.output
    job_id = job_id_of(run)
    node2 = nodes.nodes[1]
    worker = " (worker rank 1, local rank 0)" if executor == "torchrun" else ""
    reason = f"rank 1 on {node2.name} exited with 7{worker}"
    assert reason in run.stdout
    assert job_processes(job_id) == []

    job = cli.job(job_id)
    assert job["state"] == "failed" and job["message"].startswith(reason)
    assert job["ranks"][1]["exit_code"] == 7
    if executor == "torchrun":
        assert job["ranks"][1]["cause"] == {"worker_rank": 1, "local_rank": 0, "exit_code": 7,
                                           "launcher_exit_code": 1}
    assert reason in cli.ok("status", job_id).stdout
    listed = cli.ok("list").stdout
    assert re.search(r"REASON", listed) and reason in listed

    eventually(lambda: webhook.bodies and mailbox.messages, timeout=30,
               message="the failure posted to the webhook and mailed")
    [posted], [mail] = webhook.bodies, mailbox.messages
    body = posted["message"]
    for text in (posted["title"] + "\n" + body, mail["Subject"] + "\n" + mailbox.text(mail)):
        assert f"crash-{executor} ({job_id})" in text
        assert "cluster: c" in text and "state: failed" in text and "attempt: 1" in text
        assert re.search(r"wall time: \d+s", text)
        assert re.search(r"GPU-hours: 0\.\d\d \(3 GPUs on 3 nodes\)", text)
        first = f"first failed rank: 1 on {node2.name} (address {node2.address}), exited with 7{worker}"
        assert first in text
        assert "exit code: 7" in text
        assert "last " in text and "rank 1: giving up with 7" in text
    assert not cli.ok("status", job_id).stdout.count("notification pending")
    for shown in (run.output, cli.ok("status", job_id).output, cli.ok("status", job_id, "-o", "json").output,
                  listed, cli.ok("list", "-o", "json").output):
        assert_masked(shown, webhook.url, mailbox.url)


def test_a_success_is_notified_and_an_endpoint_answering_500_is_retried_until_it_recovers(
        cli, nodes, workdir, webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    webhook.failing = True
    run = cli("run", "-c", "c", "--executor", "distributed", "--name", "fine", "--wait",
              "--notify", webhook.url, "--workdir", str(workdir), "--", "python", "exit_on_rank.py", "9", "0")
    assert run.code == 0, run.output  # the job is unaffected
    assert re.search(r"the succeeded notification of job \w+ to json://\*\*\* \(\w+\) was not delivered "
                     r"\(.*500.*\)", run.stderr), run.stderr
    job_id = job_id_of(run)
    status = cli.ok("status", job_id)
    assert "notification pending: succeeded to json://***" in status.stdout
    assert "tried 2 times" in status.stdout
    pending = cli.job(job_id)["extras"]["notify"]["pending"]
    assert [(p["event"], p["tries"]) for p in pending] == [("succeeded", 3)]
    assert webhook.bodies == []

    webhook.failing = False
    assert "notification pending" not in cli.ok("status", job_id).stdout
    [posted] = webhook.bodies
    assert posted["title"] == f"tsubmit: job fine ({job_id}) succeeded"
    assert "state: succeeded" in posted["message"]
    assert cli.job(job_id)["extras"]["notify"]["pending"] == []
    cli.ok("list")
    assert len(webhook.bodies) == 1  # delivered once
    for shown in (run.output, status.output, cli.ok("status", job_id, "-o", "json").output):
        assert_masked(shown, webhook.url)


def test_an_endpoint_that_is_down_or_never_answers_leaves_the_job_alone(cli, nodes, workdir, webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    webhook.answering.clear()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = f"json://127.0.0.1:{closed.getsockname()[1]}/down"
    run = cli("run", "-c", "c", "--executor", "distributed", "--wait", "--notify", webhook.url,
              "--notify", down, "--workdir", str(workdir), "--", "python", "exit_on_rank.py", "9", "0")
    assert run.code == 0, run.output
    # apprise's own read timeout (4 s) comes before tsubmit's 10 s for the silent one.
    assert run.stderr.count("not delivered (A Connection error occurred") == 2, run.stderr
    shown = cli.job(job_id_of(run))["extras"]["notify"]
    [pending] = shown["pending"]
    assert pending["event"] == "succeeded" and pending["to"] == shown["urls"]
    assert_masked(run.output + json.dumps(shown), webhook.url, down)


def test_notify_test_sends_a_message_and_names_an_endpoint_that_is_down(cli, webhook):
    sent = cli.ok("notify", "test", webhook.url)
    assert re.fullmatch(r"test notification delivered to json://\*\*\* \(\w+\)\n", sent.stdout)
    [posted] = webhook.bodies
    assert posted["title"] == "tsubmit: test notification"
    webhook.failing = True
    failed = cli("notify", "test", webhook.url)
    assert failed.code == 3 and "not delivered" in failed.stderr and "500" in failed.stderr
    assert_masked(sent.output + failed.output, webhook.url)


@pytest.mark.parametrize(("url", "named"), [
    ("gopher://host/x", "unknown notification scheme 'gopher'"),
    ("json://", "malformed json:// notification URL"),
    ("nourl", "is not a notification URL"),
])
def test_a_bad_notification_url_is_refused_before_anything_starts(cli, nodes, workdir, url, named):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--notify", url, "--workdir", str(workdir), "--", "python", "count.py")
    assert run.code == 2 and named in run.stderr, run.output
    assert cli.ok("list", "-o", "json").json() == []


def test_an_unknown_notify_on_event_is_refused(cli, nodes, workdir, webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    run = cli("run", "-c", "c", "--notify", webhook.url, "--notify-on", "failed,exploded",
              "--workdir", str(workdir), "--", "python", "count.py")
    assert run.code == 2 and "unknown event 'exploded'" in run.stderr, run.output
    assert cli.ok("list", "-o", "json").json() == []


def test_the_config_file_s_default_list_is_used_masked_in_dry_run_and_export(cli, nodes, workdir, webhook,
                                                                            tmp_path):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    config = cli.home / "config" / "config.yaml"
    config.write_text(f"notify: [{json.dumps(webhook.url)}]\nnotify_on: [succeeded]\n")
    dry = cli.ok("run", "-c", "c", "--dry-run", "--workdir", str(workdir), "--", "python", "count.py")
    dry_json = cli.ok("run", "-c", "c", "--dry-run", "-o", "json", "--workdir", str(workdir), "--",
                      "python", "count.py")
    cli.ok("export", "-c", "c", "--workdir", str(workdir), str(tmp_path / "project"), "--",
           "python", "count.py")
    exported = "".join(path.read_text(errors="replace") for path in (tmp_path / "project").rglob("*")
                       if path.is_file() and path.suffix != ".gz")
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                 "--", "python", "exit_on_rank.py", "9", "0")
    eventually(lambda: webhook.bodies, timeout=30, message="the end posted to the webhook")
    assert cli.job(job_id_of(run))["extras"]["notify"]["on"] == ["succeeded"]
    for shown in (dry.output, dry_json.output, exported, run.output):
        assert_masked(shown, webhook.url)
    runs = "".join(path.read_text(errors="replace") for path in (cli.home / "state" / "runs").rglob("*")
                   if path.is_file())
    assert job_id_of(run) in runs  # the runs' artifacts are there to read (TSUBMIT_KEEP_RUNS)
    assert_masked(runs, webhook.url)  # never sent to the nodes, so never in runner artifacts


def test_wait_sends_the_failure_of_a_job_nobody_waited_on_and_exits_1(cli, nodes, workdir, webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--notify", webhook.url, "--notify-on",
                 "failed", "--workdir", str(workdir), "--", "python", "exit_on_rank.py", "1", "7")
    job_id = job_id_of(run)
    waited = cli("wait", job_id)
    assert waited.code == 1 and f"rank 1 on {nodes.nodes[1].name} exited with 7" in waited.stdout
    [posted] = webhook.bodies
    assert posted["title"].startswith("tsubmit: job ") and "exit code: 7" in posted["message"]
    assert "node 1 says hello" in posted["message"]  # the last lines of rank 1's log
    assert cli("wait", job_id).code == 1 and len(webhook.bodies) == 1  # sent once


@pytest.mark.usefixtures("saved_crontab")
def test_a_cron_entry_notifies_from_its_spec_and_records_no_url(cli, workdir, tmp_path, webhook):
    spec_file = tmp_path / "nightly.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "nightly", "executor": "distributed", "workdir": str(workdir), "wait": True,
        "notify": [webhook.url], "notify_on": ["succeeded"], "command": ["python", "count.py", "2", "0"]}))
    cli.ok("cron", "add", "nightly", "--schedule", "30 2 * * *", "-f", str(spec_file))
    ran = cli("cron", "run", "nightly")
    assert ran.code == 0, ran.output
    [posted] = webhook.bodies
    assert posted["title"].startswith("tsubmit: job nightly (") and posted["title"].endswith(" succeeded")
    crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout
    recorded = [crontab, ran.output, cli.ok("cron", "list", "-o", "json").output]
    recorded += [path.read_text(errors="replace") for folder in ("config/cron", "state/cron")
                 for path in (cli.home / folder).rglob("*") if path.is_file()]
    for text in recorded:
        assert_masked(text, webhook.url)
    cli.ok("cron", "remove", "nightly")


def test_the_log_of_a_rank_whose_node_is_gone_is_the_copy_kept_when_it_ended(cli, nodes, workdir):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli.ok("run", "-c", "c", "--executor", "distributed", "--wait", "--workdir", str(workdir),
                 "--", "python", "exit_on_rank.py", "9", "0")
    job_id = job_id_of(run)
    worker = nodes.nodes[1]
    nodes.stop_node(worker)
    try:
        shown = cli("logs", job_id, "--rank", "1")
        assert shown.code == 0, shown.output
        assert shown.stdout == "node 1 says hello\n"
        assert re.search(rf"{worker.name} does not answer; rank 1's log is the copy kept on this machine "
                         r"at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", shown.stderr), shown.stderr
        assert cli.ok("logs", job_id).stdout == "node 0 says hello\n"  # node1 answers: its own log
    finally:
        nodes.start_node(worker)
    cli.ok("delete", job_id, "--yes")
    assert not (cli.home / "state" / "logs" / job_id).exists()


def test_a_torchrun_job_out_of_restarts_is_notified_once_with_the_worker_s_last_lines(cli, nodes, workdir,
                                                                                    webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    run = cli("run", "-c", "c", "--executor", "torchrun", "--restarts", "1", "--wait", "--notify",
              webhook.url, "--notify-on", "failed", "--workdir", str(workdir), "--",
              "python", "crash_first.py", "1", "7")
    assert run.code == 1, run.output
    eventually(lambda: webhook.bodies, timeout=30, message="the failure posted to the webhook")
    [posted] = webhook.bodies  # attempt 1's failure was restarted: not the job's
    body = posted["message"]
    assert "attempt: 2" in body and "exit code: 7" in body
    tail = body.split("'s log:\n", 1)[1]
    assert "rank 1: giving up with 7" in tail and "ChildFailedError" not in tail, body


def test_a_lost_node_is_notified_with_its_host_address_and_rank_and_its_log_kept(cli, nodes, workdir,
                                                                                 webhook, lost):
    head, worker, _ = nodes.nodes
    job_id = launch(cli, nodes, [head, worker], [], workdir, "--notify", webhook.url)
    cli.ok("watch", "--once")  # a pass while the node answers: it keeps what the rank printed
    lost(worker)
    watch_until(cli, lambda: cli.job(job_id)["state"] == "failed", "the job failed")
    eventually(lambda: len(webhook.bodies) == 2, timeout=30, message="two messages")
    # sent at once, in threads of their own: in either order
    failed, lost_node = sorted(webhook.bodies, key=lambda body: "state: lost_node" in body["message"])
    assert lost_node["title"].endswith(f"lost node: {worker.name} (address {worker.address})")
    assert lost_node["message"].endswith(f"lost node: {worker.name} (address {worker.address}), rank 1, "
                                         f"silent for longer than {NODE_TIMEOUT} (--node-timeout)")
    assert f"first failed rank: 1 on {worker.name}" in failed["message"]
    assert f"cause: lost node {worker.name}: no free spare" in failed["message"], failed["message"]
    shown = cli("logs", job_id, "--rank", "1")  # its node is gone: the copy the watcher kept
    assert shown.code == 0 and "REPORT " in shown.stdout, shown.output
