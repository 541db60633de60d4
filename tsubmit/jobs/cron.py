"""Scheduled submissions through the user's crontab.

Entries live in a marked block of the crontab; lines outside it are never
touched, and removing the last entry leaves the crontab as it was before the
first (no crontab at all if there was none). Each entry runs `tsubmit cron
exec NAME` with absolute paths and the PATH it needs, appending one line per
run to the schedule's log in the state dir; `exec` writes each run's output
to a file of its own and records the result of the run that started last.
The block is rewritten from the definitions in the config dir (cron/NAME.yml),
which also keep the tsubmit environment in force when the entry was added;
each config dir has a block of its own.
"""

import calendar
import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from ..errors import UsageError
from ..paths import config_dir, ensure_private_dir, state_dir

# One block per config dir (TSUBMIT_HOME, XDG_CONFIG_HOME): each holds the
# entries of its own definitions, and rewriting one leaves the others alone.
_BEGIN = "# BEGIN tsubmit"
_LEGACY_BEGIN = "# BEGIN tsubmit: entries managed by `tsubmit cron`; change them with `tsubmit cron`"
END = "# END tsubmit"
# The first line of a crontab that tsubmit created: its last entry removes it.
CREATED = "# tsubmit created this crontab; removing its last entry removes the crontab"
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Words that mean nothing to /bin/sh nor to cron, written as they are.
_PLAIN = re.compile(r"^[\w@+=:,./-]+$", re.ASCII)


@dataclass(frozen=True)
class Schedule:
    """A five-field cron expression (or a macro), as cron reads it."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        expression = _MACROS.get(text.strip().lower(), text.strip())
        parts = expression.split()
        if len(parts) != 5:
            raise UsageError(f"invalid cron schedule {text!r}: expected 5 fields "
                             "(minute hour day-of-month month day-of-week) or @daily, @hourly, ...")
        values = [_parse_field(part, *spec, text) for part, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if day == 7 else day for day in values[4])
        return cls(text, *values[:4], weekdays, parts[2] == "*", parts[4] == "*")

    def matches_day(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # cron counts from Sunday
        in_days, in_weekdays = moment.day in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:  # cron: both restricted means either may match
            return in_days and in_weekdays
        return in_days or in_weekdays

    def next_after(self, moment: datetime) -> datetime:
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months:
                candidate = (candidate.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self.matches_day(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise UsageError(f"cron schedule {self.text!r} never runs")


def _parse_field(part: str, label: str, low: int, high: int, names: dict, text: str) -> frozenset[int]:
    def number(token: str) -> int:
        token = token.lower()
        value = names.get(token[:3]) if token.isalpha() else (int(token) if token.isdigit() else None)
        if value is None or not low <= value <= high:
            raise UsageError(f"invalid cron schedule {text!r}: {token!r} is not a valid {label} "
                             f"({low}-{high})")
        return value

    selected: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        step = number(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise UsageError(f"invalid cron schedule {text!r}: bad step {step_text!r} in the {label}")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first, last = (number(token) for token in body.split("-", 1))
        else:
            first = last = number(body)
            if step_text:
                last = high
        if first > last:
            raise UsageError(f"invalid cron schedule {text!r}: range {body!r} runs backwards")
        selected.update(range(first, last + 1, step))
    return frozenset(selected)


# -- definitions and the crontab block --------------------------------------

def _definitions_dir() -> Path:
    return config_dir() / "cron"


def log_path(name: str) -> Path:
    """The schedule's log: one line when a run starts and one when it ends, naming its own log."""
    return ensure_private_dir(state_dir() / "cron") / f"{name}.log"


def runs_dir(name: str) -> Path:
    """One log file per run, so overlapping runs never interleave their output."""
    return ensure_private_dir(state_dir() / "cron" / name)


def _last_result_path(name: str) -> Path:
    return ensure_private_dir(state_dir() / "cron") / f"{name}.last.json"


# Runs kept per schedule (their log files); older ones are removed by the next run.
KEPT_RUNS = 50
_RUN_ID = re.compile(r"^\d{8}-\d{6}-\d+$")
RUN_ID_VARIABLE = "TSUBMIT_CRON_RUN_ID"
# The variables that decide where tsubmit keeps its files: the crontab line
# sets them, so that `cron exec` finds the schedule's definition at all.
_LOCATION = ("TSUBMIT_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")


def definitions() -> dict[str, dict]:
    folder = _definitions_dir()
    if not folder.is_dir():
        return {}
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yml"))}


def add(name: str, schedule: str, spec: Path, *, wait: bool, if_running: str | None) -> dict:
    from ..model.jobspec import POLICIES, load

    if not _NAME.match(name):
        raise UsageError(f"invalid schedule name {name!r}: use letters, digits, '.', '_' or '-'")
    schedule = " ".join(schedule.split())  # the crontab line holds it: one line, single spaces
    if schedule.lower() != "@reboot":
        Schedule.parse(schedule)
    load(spec)  # a spec that does not load is refused now, not at 2 a.m.
    if if_running is not None and if_running not in POLICIES:
        raise UsageError(f"unknown --if-running policy {if_running!r}; choose one of {', '.join(POLICIES)}")
    if name in definitions():
        raise UsageError(f"schedule {name!r} already exists; remove it first")
    return _define(name, {"schedule": schedule, "spec": str(spec.resolve()), "wait": wait,
                          "if_running": if_running, "environment": carried_environment()})


def _define(name: str, entry: dict) -> dict:
    """Write schedule NAME's definition and the crontab block with its line."""
    entry_line(name, entry)  # refuses what cron could not run as given
    folder = _definitions_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{name}.yml"
    path.touch(mode=0o600)  # its environment may name private files
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    try:
        _install()
    except UsageError:
        path.unlink()  # nothing half-written: no definition without its crontab line
        raise
    return entry


# The schedule `tsubmit watch --install` keeps: a watch pass every minute.
WATCH = "watch"
_WATCH_COMMAND = ["watch", "--once"]


def install_watch() -> dict:
    """Add the schedule that runs `tsubmit watch --once` every minute, with the
    environment in force now (where the job store is); once."""
    existing = definitions().get(WATCH)
    if existing is not None:
        if existing.get("command") == _WATCH_COMMAND:
            raise UsageError("the watcher is already installed (tsubmit cron list; "
                             "`tsubmit watch --uninstall` removes it)")
        raise UsageError(f"a schedule named {WATCH!r} runs {existing.get('spec')}; remove it first "
                         f"(tsubmit cron remove {WATCH})")
    return _define(WATCH, {"schedule": "* * * * *", "command": _WATCH_COMMAND,
                           "environment": carried_environment()})


def uninstall_watch() -> None:
    if (definitions().get(WATCH) or {}).get("command") != _WATCH_COMMAND:
        raise UsageError("the watcher is not installed (tsubmit watch --install)")
    remove(WATCH)


def carried_environment() -> dict[str, str]:
    """The environment in force now that shapes a run, as a cron run will need it.

    cron starts its commands with almost nothing set, so every TSUBMIT_*
    variable (TSUBMIT_ANSIBLE_PATH, TSUBMIT_ANSIBLE_CONFIG, TSUBMIT_HOME, ...),
    the XDG folders tsubmit's files live in, and the ANSIBLE_* settings that
    reach ansible-playbook are kept with the entry. Paths become absolute (cron
    runs in the home folder); one that does not exist is refused now rather
    than failing at 2 a.m.
    """
    from ..nodes.ansible_env import USER_PATH_VARIABLE, user_paths

    carried = {}
    for variable, value in sorted(os.environ.items()):
        # ANSIBLE_CONFIG is ignored by tsubmit (docs/reference/files.md).
        wanted = variable.startswith("TSUBMIT_") or variable in _LOCATION or (
            variable.startswith("ANSIBLE_") and variable != "ANSIBLE_CONFIG")
        if not wanted or variable == RUN_ID_VARIABLE or value == "":
            continue
        if "\n" in value or "\0" in value:
            raise UsageError(f"{variable} holds a line break, which a crontab entry cannot carry; "
                             "unset it or change it before `tsubmit cron add`")
        carried[variable] = value
    if USER_PATH_VARIABLE in carried:
        carried[USER_PATH_VARIABLE] = os.pathsep.join(str(folder) for folder in user_paths())
    if "TSUBMIT_ANSIBLE_CONFIG" in carried:
        config = Path(carried["TSUBMIT_ANSIBLE_CONFIG"]).expanduser()
        if not config.is_file():
            raise UsageError(f"TSUBMIT_ANSIBLE_CONFIG: {carried['TSUBMIT_ANSIBLE_CONFIG']} is not a file; "
                             "a cron run would not find it either")
        carried["TSUBMIT_ANSIBLE_CONFIG"] = str(config.resolve())
    for variable in _LOCATION:
        if variable in carried:
            carried[variable] = str(Path(carried[variable]).expanduser().absolute())
    return carried


def remove(name: str) -> None:
    path = _definitions_dir() / f"{name}.yml"
    if not path.exists():
        known = ", ".join(definitions()) or "none"
        raise UsageError(f"unknown schedule {name!r}; schedules: {known}")
    path.unlink()
    _install()


def entry_line(name: str, entry: dict) -> str:
    """The crontab line: absolute paths, where tsubmit's files are, output to the log.

    Every value is single-quoted for /bin/sh, and each `%` (which cron turns
    into a line break) is written as `'\\%'`: outside the quotes, so cron's
    backslash escape cannot meet a backslash of the value itself.
    """
    environment = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin",
                                            "/usr/bin", "/bin"])}
    carried = entry.get("environment")
    if carried is None:  # an entry added before environments were kept: the old behaviour
        carried = {key: os.environ[key] for key in _LOCATION if os.environ.get(key)}
    environment.update({key: carried[key] for key in _LOCATION if key in carried})
    words = [*(f"{key}={_quote(value)}" for key, value in environment.items()),
             _quote(sys.executable), "-m", "tsubmit", "cron", "exec", name,
             ">>", _quote(str(log_path(name))), "2>&1"]
    command = " ".join(words)
    if "\n" in command or "\r" in command:
        raise UsageError("a crontab entry cannot hold a line break; check TSUBMIT_HOME, "
                         "XDG_STATE_HOME and the path of the Python running tsubmit")
    return f"{entry['schedule']} {command}"


def _quote(value: str) -> str:
    """`value` as one /bin/sh word in a crontab line (see entry_line)."""
    if _PLAIN.match(value):
        return value
    quoted = "'" + value.replace("'", "'\"'\"'") + "'"
    return quoted.replace("%", "'\\%'")


def cron_command(line: str) -> tuple[str, str | None]:
    """What cron passes to /bin/sh for a crontab line, and the standard input it
    gives (text after the first unescaped `%`, its other `%` as line breaks);
    `\\%` stands for `%`, other backslashes stay. As Debian's cron (do_command.c)."""
    command = line.split(None, 1)[1] if line.startswith("@") else line.split(None, 5)[5]
    out, escaped = [], False
    for index, char in enumerate(command):
        if escaped:
            if char != "%":
                out.append("\\")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            return "".join(out), command[index + 1:].replace("%", "\n")
        else:
            out.append(char)
    if escaped:
        out.append("\\")
    return "".join(out), None


def read_crontab() -> list[str]:
    try:
        listing = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError("crontab is not installed on this machine (Debian: apt install cron)") from None
    if listing.returncode != 0:
        if "no crontab" in listing.stderr.lower():
            return []
        raise UsageError(f"crontab -l failed: {listing.stderr.strip()}")
    return listing.stdout.splitlines()


def begin_line() -> str:
    return f"{_BEGIN} (config {config_dir()}): entries managed by `tsubmit cron`; change them with it"


def _own_block(lines: list[str]) -> tuple[int, int] | None:
    """Where this config dir's block is (first and last line), if anywhere."""
    for marker in (begin_line(), _LEGACY_BEGIN):  # an entry of an older tsubmit: this home's
        if marker in lines:
            start = lines.index(marker)
            end = next((index for index in range(start, len(lines)) if lines[index] == END), None)
            if end is None:
                raise UsageError(f"the crontab has {marker!r} but no {END!r} after it; "
                                 "fix it with `crontab -e`")
            return start, end
    return None


def _install() -> None:
    lines = read_crontab()  # first: it says so when crontab is not installed
    exists = subprocess.run(["crontab", "-l"], capture_output=True, text=True).returncode == 0
    block = []
    for name, entry in definitions().items():
        block += [f"# tsubmit: {name}", entry_line(name, entry)]
    created = CREATED in lines or (not exists and bool(block))
    lines = [line for line in lines if line != CREATED]
    found = _own_block(lines)
    if found:
        start, end = found
        lines[start:end + 1] = [begin_line(), *block, END] if block else []
    elif block:
        lines += [begin_line(), *block, END]
    if created and not any(line.startswith(_BEGIN) for line in lines):
        created = False  # tsubmit's entries are gone: what is left is the user's, or nothing
        if not lines:
            removed = subprocess.run(["crontab", "-r"], capture_output=True, text=True)
            if removed.returncode != 0 and "no crontab" not in removed.stderr.lower():
                raise UsageError(f"crontab could not be removed: {removed.stderr.strip()}")
            return
    if created:
        lines.insert(0, CREATED)
    # An empty crontab stays empty: no line is added where there was none.
    text = "".join(f"{line}\n" for line in lines)
    written = subprocess.run(["crontab", "-"], input=text, capture_output=True, text=True)
    if written.returncode != 0:
        raise UsageError(f"crontab could not be written: {written.stderr.strip()}")


def installed_line(name: str) -> str:
    """The crontab line of schedule NAME: this config dir's, else the only one of that name
    (`cron run` works from a bare environment too: the line says where its files are)."""
    lines = read_crontab()
    found = _own_block(lines)
    marker = f"# tsubmit: {name}"
    if found and marker in lines[found[0]:found[1]]:
        return lines[lines.index(marker, found[0]) + 1]
    candidates = [lines[index + 1] for index, line in enumerate(lines[:-1]) if line == marker]
    if len(candidates) > 1:
        raise UsageError(f"{len(candidates)} tsubmit homes have a schedule {name!r}; set the "
                         "TSUBMIT_HOME (or XDG_CONFIG_HOME) it was added with")
    if not candidates:
        raise UsageError(f"schedule {name!r} is not in the crontab; see `tsubmit cron list`")
    return candidates[0]


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def run_log(name: str, run_id: str) -> Path:
    return runs_dir(name) / f"{run_id}.log"


def run_like_cron(name: str) -> tuple[int, Path]:
    """Run the installed entry now as cron would: /bin/sh, cron's bare environment,
    no terminal. Returns the exit code and the run's own log."""
    command, stdin_text = cron_command(installed_line(name))
    import pwd

    account = pwd.getpwuid(os.getuid())
    run_id = new_run_id()
    # The line says where the run's files go (TSUBMIT_HOME, XDG_STATE_HOME), not this process.
    assignments = {}
    for word in shlex.split(command):
        key, equals, value = word.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            break
        assignments[key] = value
    if assignments.get("TSUBMIT_HOME"):
        state = Path(assignments["TSUBMIT_HOME"]) / "state"
    else:
        state = Path(assignments.get("XDG_STATE_HOME") or Path(account.pw_dir) / ".local/state") / "tsubmit"
    environment = {"HOME": account.pw_dir, "LOGNAME": account.pw_name, "USER": account.pw_name,
                   "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin",
                   RUN_ID_VARIABLE: run_id}  # only so that this command can name the run's log
    code = subprocess.run(["/bin/sh", "-c", command], env=environment, input=stdin_text or "", text=True,
                          start_new_session=True).returncode
    return code, state / "cron" / name / f"{run_id}.log"


def execute(name: str) -> int:
    """What the crontab entry runs: the spec, with the entry's options and the
    environment kept when it was added; its output in a log file of its own."""
    entry = definitions().get(name)
    if entry is None:
        raise UsageError(f"unknown schedule {name!r}")
    arguments = [sys.executable, "-m", "tsubmit", *(entry.get("command") or ["run", "-f", entry["spec"]])]
    if entry.get("wait"):
        arguments.append("--wait")
    if entry.get("if_running"):
        arguments += ["--if-running", entry["if_running"]]
    run_id = os.environ.pop(RUN_ID_VARIABLE, "")
    if not _RUN_ID.match(run_id):
        run_id = new_run_id()
    output = run_log(name, run_id)
    environment = {**os.environ, **entry.get("environment", {})}
    started = time.time()
    print(f"[{run_id}] {time.strftime('%Y-%m-%d %H:%M:%S')} tsubmit cron {name}: "
          f"{shlex.join(arguments[3:])}; output in {output}", flush=True)
    with output.open("a") as log:
        code = subprocess.run(arguments, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              env=environment).returncode
    print(f"[{run_id}] {time.strftime('%Y-%m-%d %H:%M:%S')} exit {code}", flush=True)
    _record(name, {"run": run_id, "exit_code": code, "started": started, "ended": time.time(),
                   "log": str(output)})
    _prune(name)
    return code


def _record(name: str, result: dict) -> None:
    """Keep the result of the run that started last: an earlier run that ends
    after a later one (a skip, say) does not take its place."""
    path = _last_result_path(name)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(path.read_text())["started"] > result["started"]:
                return
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=".last-")
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(result))
        os.replace(partial, path)


def _prune(name: str) -> None:
    logs = sorted(runs_dir(name).glob("*.log"), key=lambda path: path.stat().st_mtime)
    for old in logs[:-KEPT_RUNS]:
        with contextlib.suppress(OSError):
            old.unlink()


def listing(now: datetime | None = None) -> list[dict]:
    now = now or datetime.now()
    rows = []
    for name, entry in definitions().items():
        last_path = _last_result_path(name)
        last = json.loads(last_path.read_text()) if last_path.exists() else None
        schedule = entry["schedule"]
        next_run = None if schedule.strip().lower() == "@reboot" else \
            Schedule.parse(schedule).next_after(now).isoformat(sep=" ", timespec="minutes")
        rows.append({"name": name, "schedule": schedule, "next_run": next_run, "spec": entry.get("spec"),
                     "command": ["tsubmit", *entry["command"]] if entry.get("command") else None,
                     "wait": entry.get("wait", False), "if_running": entry.get("if_running"),
                     "last_exit_code": last["exit_code"] if last else None,
                     "last_run": last["started"] if last else None, "log": str(log_path(name)),
                     "last_log": last.get("log") if last else None,
                     "environment": sorted(entry.get("environment", {}))})  # names: values may be private
    return rows
