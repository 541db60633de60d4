"""Unattended submissions as cron drives them: `tsubmit cron` against this user's real
crontab (saved and restored around each test, one test at a time), runs started as cron
starts them, and a real cron daemon. Spec files, the overlap policy, JSON output and
retention: test_unattended_specs.py."""

import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TSUBMIT
from tests.harness import eventually
from tests.harness.crontab import lines as crontab_lines
from tests.harness.crontab import read as crontab_text

pytestmark = pytest.mark.e2e


def test_cron_add_list_run_remove_against_the_real_crontab(cli, workdir, tmp_path, crontab):
    spec_file = tmp_path / "nightly.yaml"
    spec = {"name": "nightly", "executor": "distributed", "workdir": str(workdir),
            "command": ["python", "count.py", "2", "0"]}
    spec_file.write_text(yaml.safe_dump(spec))
    cli.ok("cron", "add", "nightly", "--schedule", "30 2 * * *", "-f", str(spec_file), "--wait",
           "--if-running", "skip")
    lines = crontab_lines()
    assert lines[0] == "7 3 * * * echo foreign-entry"
    [entry] = [line for line in lines if "cron exec nightly" in line]
    assert entry.startswith("30 2 * * * PATH=") and f"{sys.executable} -m tsubmit" in entry

    [row] = cli.ok("cron", "list", "-o", "json").json()
    assert row["name"] == "nightly" and row["schedule"] == "30 2 * * *"
    assert row["next_run"].endswith("02:30") and row["last_exit_code"] is None

    run = run_like_cron(cli, "nightly")
    assert run.returncode == 0, run.stdout + run.stderr
    [row] = cli.ok("cron", "list", "-o", "json").json()
    assert row["last_exit_code"] == 0
    assert f"its output is in {row['last_log']}" in run.stdout
    assert "succeeded" in Path(row["last_log"]).read_text()  # the run's own log
    log = (cli.home / "state" / "cron" / "nightly.log").read_text()
    run_id = Path(row["last_log"]).stem
    assert [line.split()[0] for line in log.splitlines()] == [f"[{run_id}]"] * 2, log
    assert log.splitlines()[-1].endswith("exit 0")
    [job] = cli.ok("list", "-o", "json").json()
    assert job["name"] == "nightly" and job["state"] == "succeeded"

    cli.ok("cron", "remove", "nightly")
    assert crontab_lines() == ["7 3 * * * echo foreign-entry"]


@pytest.mark.parametrize(("args", "message"), [
    (["cron", "add", "x", "--schedule", "61 * * * *"], "'61' is not a valid minute"),
    (["cron", "add", "x", "--schedule", "* * *"], "expected 5 fields"),
    (["cron", "remove", "nope"], "unknown schedule 'nope'"),
])
def test_bad_cron_input(cli, tmp_path, crontab, args, message):
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("command: [python, x.py]\n")
    if args[1] == "add":
        args = [*args, "-f", str(spec_file)]
    run = cli(*args)
    assert run.code == 2, run.output
    assert message in run.stderr
    assert crontab_lines() == ["7 3 * * * echo foreign-entry"]


def write_spec(path: Path, workdir: Path, name: str, command: list[str], **keys) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"name": name, "executor": "distributed", "workdir": str(workdir),
                                    "command": command, **keys}))
    return path


def run_like_cron(cli, name: str) -> subprocess.CompletedProcess:
    """`tsubmit cron run` from a bare environment, no terminal, as cron would start it."""
    return subprocess.run(["env", "-i", *TSUBMIT, "cron", "run", name], cwd="/",
                          env={"TSUBMIT_HOME": str(cli.home)}, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, start_new_session=True, timeout=300)


@pytest.mark.parametrize("before", [None, "# my own\nMAILTO=ops@example.com\n\n7 3 * * * echo mine\n\n"],
                         ids=["no crontab", "a crontab of its own"])
def test_removing_the_last_entry_leaves_the_crontab_as_found(cli, workdir, tmp_path, saved_crontab,
                                                             before):
    if before is None:
        subprocess.run(["crontab", "-r"], capture_output=True)
    else:
        subprocess.run(["crontab", "-"], input=before, text=True, check=True)
    assert crontab_text() == before
    spec = write_spec(tmp_path / "job.yaml", workdir, "n", ["python", "-c", "pass"])
    cli.ok("cron", "add", "one", "--schedule", "@daily", "-f", str(spec))
    cli.ok("cron", "add", "two", "--schedule", "0 4 * * *", "-f", str(spec))
    assert crontab_text().startswith(before or "# tsubmit created this crontab")
    cli.ok("cron", "remove", "one")
    cli.ok("cron", "remove", "two")
    assert crontab_text() == before


def test_two_tsubmit_homes_keep_their_own_entries(workdir, tmp_path, saved_crontab):
    """Entries added under one TSUBMIT_HOME survive adding and removing those of another."""
    from tests.conftest import Cli

    subprocess.run(["crontab", "-r"], capture_output=True)
    first, second = Cli(tmp_path / "first"), Cli(tmp_path / "second")
    spec = write_spec(tmp_path / "job.yaml", workdir, "homes", ["python", "-c", "pass"])
    first.ok("cron", "add", "nightly", "--schedule", "@daily", "-f", str(spec))
    second.ok("cron", "add", "nightly", "--schedule", "@hourly", "-f", str(spec))
    second.ok("cron", "add", "other", "--schedule", "@weekly", "-f", str(spec))
    entries = [line for line in crontab_lines() if "cron exec" in line]
    assert len(entries) == 3, entries
    second.ok("cron", "remove", "other")
    [daily] = [line for line in crontab_lines() if line.startswith("@daily")]
    assert f"TSUBMIT_HOME={tmp_path / 'first'}" in daily
    ambiguous = run_like_cron(first, "nightly")  # no TSUBMIT_HOME: which one?
    assert ambiguous.returncode == 2
    assert "2 tsubmit homes have a schedule 'nightly'; set the TSUBMIT_HOME" in ambiguous.stderr
    first.ok("cron", "run", "nightly")
    assert first.ok("cron", "list", "-o", "json").json()[0]["last_exit_code"] == 0
    assert second.ok("cron", "list", "-o", "json").json()[0]["last_exit_code"] is None
    first.ok("cron", "remove", "nightly")
    assert [line for line in crontab_lines() if "cron exec" in line] == [
        line for line in entries if line.startswith("@hourly")]
    second.ok("cron", "remove", "nightly")
    assert crontab_text() is None  # tsubmit made the crontab: its last entry took it away


def test_cron_entries_carry_the_tsubmit_environment_in_force(cli, workdir, tmp_path, crontab):
    """A launch role replaced on TSUBMIT_ANSIBLE_PATH and an ansible.cfg of
    TSUBMIT_ANSIBLE_CONFIG, set when the entry was added, shape the cron run:
    cron itself starts it with none of them."""
    marks = tmp_path / "marks"
    marks.mkdir()
    override = tmp_path / "team-roles"
    shutil.copytree(REPO / "roles" / "launch", override / "launch")
    tasks = override / "launch" / "tasks" / "main.yml"
    tasks.write_text("---\n" + yaml.safe_dump([{
        "name": "Leave a mark of the team's launch role",
        "ansible.builtin.copy": {"content": "team\n", "dest": f"{marks}/{{{{ tsubmit_job_id }}}}",
                                 "mode": "0644"},
        "delegate_to": "localhost"}], sort_keys=False) + tasks.read_text().removeprefix("---\n"))
    config = tmp_path / "team-ansible.cfg"
    config.write_text((REPO / "ansible.cfg").read_text().replace(
        "[defaults]\n", f"[defaults]\nlog_path = {tmp_path / 'ansible.log'}\n", 1))
    cli.env.update({"TSUBMIT_ANSIBLE_PATH": str(override), "TSUBMIT_ANSIBLE_CONFIG": str(config)})
    spec = write_spec(tmp_path / "job.yaml", workdir, "carried", ["python", "-c", "pass"], wait=True)

    added = cli.ok("cron", "add", "carried", "--schedule", "0 1 * * *", "-f", str(spec))
    assert "TSUBMIT_ANSIBLE_CONFIG, TSUBMIT_ANSIBLE_PATH" in added.stdout
    [row] = cli.ok("cron", "list", "-o", "json").json()
    assert {"TSUBMIT_ANSIBLE_PATH", "TSUBMIT_ANSIBLE_CONFIG", "TSUBMIT_HOME"} <= set(row["environment"])

    run = run_like_cron(cli, "carried")
    assert run.returncode == 0, run.stdout + run.stderr
    [job] = cli.ok("list", "-o", "json").json()
    assert job["state"] == "succeeded"
    assert (marks / job["id"]).read_text() == "team\n"  # the team's launch role ran
    # with the team's ansible.cfg, which logs every play
    assert "PLAY [Submit a tsubmit job]" in (tmp_path / "ansible.log").read_text()


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("TSUBMIT_ANSIBLE_PATH", "/nonexistent/roles",
     "TSUBMIT_ANSIBLE_PATH: /nonexistent/roles is not a folder"),
    ("TSUBMIT_ANSIBLE_CONFIG", "/nonexistent/ansible.cfg",
     "TSUBMIT_ANSIBLE_CONFIG: /nonexistent/ansible.cfg is not a file; a cron run would not find it either"),
    ("TSUBMIT_ANSIBLE_PATH", "/tmp\nx", "TSUBMIT_ANSIBLE_PATH holds a line break"),
])
def test_an_environment_cron_could_not_carry_is_refused(cli, workdir, tmp_path, crontab, variable, value,
                                                        message):
    spec = write_spec(tmp_path / "job.yaml", workdir, "n", ["python", "-c", "pass"])
    cli.env[variable] = value
    run = cli("cron", "add", "x", "--schedule", "@daily", "-f", str(spec))
    assert run.code == 2, run.output
    assert message in run.stderr and "Traceback" not in run.output
    assert crontab_lines() == ["7 3 * * * echo foreign-entry"]
    del cli.env[variable]
    assert cli.ok("cron", "list", "-o", "json").json() == []


@pytest.mark.parametrize("name", ["a b", "$(touch PWNED)", "50%", "it's", "`id`", "../up"])
def test_a_schedule_name_that_is_not_a_plain_word_is_refused(cli, workdir, tmp_path, crontab, name):
    spec = write_spec(tmp_path / "job.yaml", workdir, "n", ["python", "-c", "pass"])
    run = cli("cron", "add", name, "--schedule", "@daily", "-f", str(spec), cwd=tmp_path)
    assert run.code == 2, run.output
    assert f"invalid schedule name {name!r}" in run.stderr
    assert crontab_lines() == ["7 3 * * * echo foreign-entry"]
    assert not list(tmp_path.rglob("PWNED"))


# Spaces, both quotes, a command substitution, a backslash, and `%`, which cron
# turns into a line break unless escaped.
AWKWARD = "it's a \"job\" $(touch PWNED) `touch PWNED` 50% \\%d"


def test_cron_lines_quote_awkward_paths_as_data(workdir, tmp_path, crontab):
    """A TSUBMIT_HOME (so the log path) and a spec path holding every character
    that means something to cron or to /bin/sh reach tsubmit unchanged."""
    from tests.conftest import Cli

    home = tmp_path / AWKWARD / "home"
    home.mkdir(parents=True)
    cli = Cli(home)
    spec = write_spec(tmp_path / AWKWARD / "job %s.yaml", workdir, "awkward",
                      ["python", "count.py", "1", "0"], wait=True)
    cli.ok("cron", "add", "awkward", "--schedule", "0 2 * * *", "-f", str(spec), cwd=tmp_path)
    [line] = [line for line in crontab_lines() if "cron exec awkward" in line]
    from tsubmit.jobs.cron import cron_command

    command, stdin = cron_command(line)
    assert stdin is None  # no `%` left unescaped: cron would cut the command there
    words = shlex.split(command)
    assert f"TSUBMIT_HOME={home}" in words
    assert words[-2:] == [str(home / "state" / "cron" / "awkward.log"), "2>&1"]

    run = run_like_cron(cli, "awkward")
    assert run.returncode == 0, run.stdout + run.stderr
    [job] = cli.ok("list", "-o", "json").json()
    assert job["name"] == "awkward" and job["state"] == "succeeded"
    [row] = cli.ok("cron", "list", "-o", "json").json()
    assert row["spec"] == str(spec) and row["last_exit_code"] == 0
    assert Path(row["last_log"]).is_file() and (home / "state" / "cron" / "awkward.log").is_file()
    for folder in (tmp_path, Path("/"), Path.home()):
        assert not (folder / "PWNED").exists()
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.skipif(not Path("/usr/sbin/cron").exists(), reason="no cron daemon installed")
def test_a_real_cron_daemon_runs_an_awkward_entry(workdir, tmp_path, crontab):
    """The entry as the cron daemon itself runs it (one minute at most to wait)."""
    from tests.conftest import Cli

    if subprocess.run(["pgrep", "-x", "cron"], capture_output=True).returncode == 0:
        pytest.skip("a cron daemon runs already; this test starts its own")
    home = tmp_path / AWKWARD / "home"
    home.mkdir(parents=True)
    cli = Cli(home)
    spec = write_spec(tmp_path / AWKWARD / "job.yaml", workdir, "by-cron", ["python", "count.py", "1", "0"],
                      wait=True)
    cli.ok("cron", "add", "by-cron", "--schedule", "* * * * *", "-f", str(spec), cwd=tmp_path)
    daemon = subprocess.Popen(["/usr/sbin/cron", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def ran() -> dict | None:
        [row] = cli.ok("cron", "list", "-o", "json").json()
        return row if row["last_exit_code"] is not None else None

    try:
        row = eventually(ran, timeout=150, interval=2, message="the cron daemon running the entry",
                         detail=lambda: (home / "state" / "cron" / "by-cron.log").read_text())
    finally:
        cli.ok("cron", "remove", "by-cron")
        daemon.terminate()
        daemon.wait(timeout=30)
    assert row["last_exit_code"] == 0, (home / "state" / "cron" / "by-cron.log").read_text()
    assert "succeeded" in Path(row["last_log"]).read_text()
    assert [job["state"] for job in cli.ok("list", "-o", "json").json()][-1] == "succeeded"
    assert not list(tmp_path.rglob("PWNED"))


def test_overlapping_cron_runs_keep_their_own_logs_and_the_latest_start_wins(cli, workdir, tmp_path,
                                                                          crontab):
    """The first run waits for a job that fails; a second run started while it
    runs is skipped and ends first. Each has its own log; the last result is
    the second run's, though the first ended later."""
    spec = write_spec(tmp_path / "job.yaml", workdir, "overlap",
                      ["python", "-c", "import time, sys; time.sleep(8); sys.exit(3)"],
                      wait=True, if_running="skip")
    cli.ok("cron", "add", "overlap", "--schedule", "@hourly", "-f", str(spec))
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", run_like_cron(cli, "overlap")))
    first.start()
    def first_job_running() -> list:
        assert first.is_alive(), results
        return [j for j in cli.ok("list", "-o", "json").json() if j["state"] == "running"]

    eventually(first_job_running, timeout=120, interval=0.3, message="the first cron run's job running")
    second_started = time.time()
    results["second"] = run_like_cron(cli, "overlap")
    assert first.is_alive(), "the first run was to end after the second"
    first.join(timeout=300)

    assert results["second"].returncode == 0 and results["first"].returncode == 1, results
    [row] = cli.ok("cron", "list", "-o", "json").json()
    assert row["last_exit_code"] == 0 and row["last_run"] >= second_started
    logs = sorted((cli.home / "state" / "cron" / "overlap").glob("*.log"))
    assert len(logs) == 2
    texts = {path: path.read_text() for path in logs}
    [skipped] = [path for path, text in texts.items() if "skipped" in text]
    [failed] = [path for path, text in texts.items() if path != skipped]
    assert "skipped" not in texts[failed] and "failed" in texts[failed], texts[failed]
    assert str(skipped) == row["last_log"]
    for result, path in ((results["first"], failed), (results["second"], skipped)):
        assert f"its output is in {path}" in result.stdout
    # The schedule's own log: every line names its run.
    lines = (cli.home / "state" / "cron" / "overlap.log").read_text().splitlines()
    assert len(lines) == 4 and {line.split()[0] for line in lines} == {f"[{p.stem}]" for p in logs}
