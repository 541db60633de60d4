"""Scheduled submissions through the user's crontab.

Entries live in a marked block of the crontab; lines outside it are never
touched. Each entry runs `tsubmit cron exec NAME` with absolute paths and the
PATH it needs, appending its output to a per-schedule log in the state dir;
`exec` runs the spec and records the last result beside the log. The block
is rewritten from the definitions in the config dir (cron/NAME.yml).
"""

import calendar
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from .errors import UsageError
from .paths import config_dir, ensure_private_dir, state_dir

BEGIN = "# BEGIN tsubmit: entries managed by `tsubmit cron`; change them with `tsubmit cron`"
END = "# END tsubmit"
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


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
    return ensure_private_dir(state_dir() / "cron") / f"{name}.log"


def _last_result_path(name: str) -> Path:
    return ensure_private_dir(state_dir() / "cron") / f"{name}.last.json"


def definitions() -> dict[str, dict]:
    folder = _definitions_dir()
    if not folder.is_dir():
        return {}
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yml"))}


def add(name: str, schedule: str, spec: Path, *, wait: bool, if_running: str | None) -> dict:
    from .jobspec import POLICIES, load

    if not _NAME.match(name):
        raise UsageError(f"invalid schedule name {name!r}: use letters, digits, '.', '_' or '-'")
    if schedule.strip().lower() != "@reboot":
        Schedule.parse(schedule)
    load(spec)  # a spec that does not load is refused now, not at 2 a.m.
    if if_running is not None and if_running not in POLICIES:
        raise UsageError(f"unknown --if-running policy {if_running!r}; choose one of {', '.join(POLICIES)}")
    if name in definitions():
        raise UsageError(f"schedule {name!r} already exists; remove it first")
    entry = {"schedule": schedule, "spec": str(spec.resolve()), "wait": wait, "if_running": if_running}
    folder = _definitions_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / f"{name}.yml").write_text(yaml.safe_dump(entry, sort_keys=False))
    _install()
    return entry


def remove(name: str) -> None:
    path = _definitions_dir() / f"{name}.yml"
    if not path.exists():
        known = ", ".join(definitions()) or "none"
        raise UsageError(f"unknown schedule {name!r}; schedules: {known}")
    path.unlink()
    _install()


def entry_line(name: str, entry: dict) -> str:
    """The crontab line: absolute paths, the environment it needs, output to the log."""
    environment = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin",
                                            "/usr/bin", "/bin"])}
    for variable in ("TSUBMIT_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        if os.environ.get(variable):
            environment[variable] = os.environ[variable]
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in environment.items())
    command = (f"{assignments} {shlex.quote(sys.executable)} -m tsubmit cron exec {name} "
               f">> {shlex.quote(str(log_path(name)))} 2>&1")
    return f"{entry['schedule']} {command.replace('%', chr(92) + '%')}"


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


def _install() -> None:
    lines = read_crontab()
    if BEGIN in lines and END in lines:
        start, end = lines.index(BEGIN), lines.index(END)
        lines = lines[:start] + lines[end + 1:]
    block = []
    for name, entry in definitions().items():
        block += [f"# tsubmit: {name}", entry_line(name, entry)]
    if block:
        lines += [BEGIN, *block, END]
    written = subprocess.run(["crontab", "-"], input="\n".join(lines) + "\n", capture_output=True,
                             text=True)
    if written.returncode != 0:
        raise UsageError(f"crontab could not be written: {written.stderr.strip()}")


def installed_line(name: str) -> str:
    lines = read_crontab()
    marker = f"# tsubmit: {name}"
    if marker not in lines or lines.index(marker) + 1 >= len(lines):
        raise UsageError(f"schedule {name!r} is not in the crontab; see `tsubmit cron list`")
    return lines[lines.index(marker) + 1]


def run_like_cron(name: str) -> int:
    """Run the installed entry now as cron would: /bin/sh, cron's bare environment, no terminal."""
    line = installed_line(name)
    command = line.split(None, 1)[1] if line.startswith("@") else line.split(None, 5)[5]
    command = command.replace("\\%", "%")
    import pwd

    account = pwd.getpwuid(os.getuid())
    environment = {"HOME": account.pw_dir, "LOGNAME": account.pw_name, "USER": account.pw_name,
                   "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["/bin/sh", "-c", command], env=environment, stdin=subprocess.DEVNULL,
                          start_new_session=True).returncode


def execute(name: str) -> int:
    """What the crontab entry runs: the spec, with the entry's options; records the result."""
    entry = definitions().get(name)
    if entry is None:
        raise UsageError(f"unknown schedule {name!r}")
    arguments = [sys.executable, "-m", "tsubmit", "run", "-f", entry["spec"]]
    if entry.get("wait"):
        arguments.append("--wait")
    if entry.get("if_running"):
        arguments += ["--if-running", entry["if_running"]]
    started = time.time()
    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} tsubmit cron {name}: {shlex.join(arguments[3:])}",
          flush=True)
    code = subprocess.run(arguments, stdin=subprocess.DEVNULL).returncode
    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} exit {code}", flush=True)
    _last_result_path(name).write_text(json.dumps({"exit_code": code, "started": started,
                                                   "ended": time.time()}))
    return code


def listing(now: datetime | None = None) -> list[dict]:
    now = now or datetime.now()
    rows = []
    for name, entry in definitions().items():
        last_path = _last_result_path(name)
        last = json.loads(last_path.read_text()) if last_path.exists() else None
        schedule = entry["schedule"]
        next_run = None if schedule.strip().lower() == "@reboot" else \
            Schedule.parse(schedule).next_after(now).isoformat(sep=" ", timespec="minutes")
        rows.append({"name": name, "schedule": schedule, "next_run": next_run, "spec": entry["spec"],
                     "wait": entry.get("wait", False), "if_running": entry.get("if_running"),
                     "last_exit_code": last["exit_code"] if last else None,
                     "last_run": last["started"] if last else None, "log": str(log_path(name))})
    return rows
