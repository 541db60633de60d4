"""`tsubmit watch` on real sshd nodes: the jobs nobody waits for are refreshed
and notified, each message sent once however many watchers run."""


import pytest

from tests.harness import eventually
from tests.harness.crontab import lines as crontab_lines
from tests.harness.jobs import job_processes, start

pytestmark = pytest.mark.e2e


def test_two_watchers_at_once_notify_each_ended_job_once(cli, nodes, workdir, webhook):
    cli.write_cluster("c", nodes, nodes.nodes[:2])
    common = ("-c", "c", "--executor", "distributed", "--workdir", str(workdir))
    failing = start(cli, *common, "--notify", webhook.url, "--notify-on", "failed", "--",
                    "python", "exit_on_rank.py", "1", "7")
    succeeding = start(cli, *common, "--notify", webhook.url, "--", "python", "-c", "pass")
    quiet = start(cli, *common, "--", "python", "-c", "pass")
    eventually(lambda: not any(job_processes(job) for job in (failing, succeeding, quiet)),
               message="the three jobs ended on the nodes")

    watchers = cli.at_once("watch", "--once", timeout=120)
    assert [watcher.code for watcher in watchers] == [0, 0], [watcher.output for watcher in watchers]
    said = "".join(watcher.stdout for watcher in watchers)
    assert said.count(f"job {failing} ") == 1 and said.count(f"job {succeeding} ") == 1, said
    assert quiet not in said  # it notifies nobody: not watched
    titles = [body["title"] for body in webhook.bodies]
    assert len(titles) == 2, titles
    assert sorted(title.split(") ")[1] for title in titles) == ["failed: rank 1 on " + nodes.nodes[1].name
                                                                 + " exited with 7", "succeeded"], titles
    assert sum(f"({failing})" in title for title in titles) == 1, titles
    assert list((cli.home / "state" / "watch").iterdir()) == []  # no lock left for an ended job

    again = cli.ok("watch", "--once")
    assert again.stdout == "" and len(webhook.bodies) == 2


@pytest.mark.parametrize("every, message", [("0", "--every must be more than 0 seconds"),
                                            ("soon", "--every: invalid duration 'soon'")])
def test_a_bad_watch_interval_is_refused(cli, every, message):
    result = cli("watch", "--every", every)
    assert result.code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_watch_install_keeps_one_cron_entry_that_runs_a_pass(cli, nodes, workdir, webhook,
                                                             crontab):
    cli.write_cluster("c", nodes, nodes.nodes[:1])
    job = start(cli, "-c", "c", "--executor", "distributed", "--notify", webhook.url, "--workdir",
                str(workdir), "--", "python", "-c", "pass")
    eventually(lambda: not job_processes(job), message="the job ended on the node")
    cli.ok("watch", "--install")
    [entry] = [line for line in crontab_lines() if "cron exec watch" in line]
    assert entry.startswith("* * * * * PATH=")
    again = cli("watch", "--install")
    assert again.code == 2 and "already installed" in again.stderr, again.output
    [row] = cli.ok("cron", "list", "-o", "json").json()
    assert row["command"] == ["tsubmit", "watch", "--once"] and row["spec"] is None
    assert cli("cron", "exec", "watch").code == 0  # what the entry runs (its line: test_unattended.py)
    [posted] = webhook.bodies
    assert f"({job}) succeeded" in posted["title"]
    cli.ok("watch", "--uninstall")
    assert crontab_lines() == ["7 3 * * * echo foreign-entry"]
    gone = cli("watch", "--uninstall")
    assert gone.code == 2 and "not installed" in gone.stderr and len(gone.stderr.splitlines()) == 1
