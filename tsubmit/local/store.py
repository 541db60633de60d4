"""The local job store: one SQLite file in the state dir.

WAL mode and a busy timeout let several tsubmit processes (a user's shell and
cron) read and write at once. The schema version lives in PRAGMA user_version
so a newer tsubmit can migrate an older file.
"""

import contextlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from functools import wraps
from pathlib import Path

from ..errors import UsageError
from ..model.job import Job, Rank, merged_pending

SCHEMA_VERSION = 9
# Seconds a command waits for another tsubmit process that holds the store.
DEFAULT_BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    cluster TEXT NOT NULL,
    inventory TEXT NOT NULL,
    executor TEXT NOT NULL,
    command TEXT NOT NULL,
    workdir TEXT NOT NULL,
    env TEXT NOT NULL,
    gpus INTEGER,
    max_restarts INTEGER NOT NULL,
    archive TEXT NOT NULL,
    git_commit TEXT,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    message TEXT NOT NULL,
    extras TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    ended_at REAL,
    keep_going INTEGER NOT NULL DEFAULT 0,
    pending TEXT NOT NULL DEFAULT 'null',
    launcher TEXT NOT NULL DEFAULT 'null',
    revision INTEGER NOT NULL DEFAULT 0,
    attempts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX jobs_name ON jobs (name);
CREATE TABLE ranks (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    rank INTEGER NOT NULL,
    host TEXT NOT NULL,
    address TEXT NOT NULL,
    nproc INTEGER,
    pid INTEGER,
    pid_start TEXT,
    state TEXT NOT NULL,
    exit_code INTEGER,
    started_at REAL,
    ended_at REAL,
    attempt INTEGER NOT NULL,
    cause TEXT NOT NULL DEFAULT 'null',
    leftovers INTEGER,
    unreachable_since REAL,
    log_idle REAL,
    PRIMARY KEY (job_id, rank)
);
CREATE TABLE silent_hosts (
    host TEXT PRIMARY KEY,
    since REAL NOT NULL,
    tried REAL NOT NULL
);
"""

# Each step brings a store of the previous version up to the next.
_MIGRATIONS = {
    1: ["ALTER TABLE jobs ADD COLUMN extras TEXT NOT NULL DEFAULT '{}'"],
    2: ["ALTER TABLE jobs ADD COLUMN keep_going INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN pending TEXT NOT NULL DEFAULT 'null'",
        "ALTER TABLE jobs ADD COLUMN launcher TEXT NOT NULL DEFAULT 'null'",
        "ALTER TABLE jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0"],
    3: ["CREATE TABLE silent_hosts (host TEXT PRIMARY KEY, since REAL NOT NULL, tried REAL NOT NULL)"],
    4: ["ALTER TABLE ranks ADD COLUMN cause TEXT NOT NULL DEFAULT 'null'"],
    5: ["ALTER TABLE ranks ADD COLUMN leftovers INTEGER"],
    6: ["ALTER TABLE ranks ADD COLUMN unreachable_since REAL"],
    7: ["ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]'"],
    8: ["ALTER TABLE ranks ADD COLUMN log_idle REAL"],
}
_JSON_COLUMNS = ("inventory", "command", "env", "extras", "pending", "launcher", "attempts")
_RANK_JSON_COLUMNS = ("cause",)
_JOB_COLUMNS = [f.name for f in fields(Job) if f.name != "ranks"]
_RANK_COLUMNS = [f.name for f in fields(Rank)]


class StoreError(UsageError):
    """The job store cannot be used as it is: the message names the file and what to do."""


def _guarded(method):
    """Turn SQLite's errors into one line that names the store's file."""

    @wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise _store_error(self.path, error) from None

    return guarded


def _store_error(path: Path, error: sqlite3.Error) -> StoreError:
    text = str(error)
    if "locked" in text or "busy" in text:
        return StoreError(f"the job store {path} is locked by another process; wait for it to "
                          "finish, or find it with `fuser " + str(path) + "`")
    if "readonly" in text or "unable to open" in text:
        return StoreError(f"cannot write the job store {path} ({text}); check its owner and "
                          "permissions (it should be yours, mode 0600)")
    return StoreError(f"the job store {path} is damaged ({text}); move it away "
                      f"(mv {path} {path}.broken) to start an empty one, or restore it from a backup")


class JobStore:
    """The jobs and their ranks, as last read from the nodes.

    Every save stamps the jobs it writes with a store-wide increasing
    revision, so a refresh can write what it read from the nodes only where
    nobody saved the job since it was loaded (save_if_unchanged): an older
    read never overwrites newer knowledge, such as a submitter's "running".
    """

    def __init__(self, path: Path, *, busy_timeout: float | None = None):
        from ..paths import ensure_private_dir

        self.path = path
        self.busy_timeout = busy_timeout if busy_timeout is not None else float(
            os.environ.get("TSUBMIT_STORE_TIMEOUT", DEFAULT_BUSY_TIMEOUT))
        # The pending action of each (job, revision) this process read or wrote:
        # what save_if_unchanged tells a copy's own change of it by.
        self._pending_read: dict[tuple[str, int], dict | None] = {}
        self._told_waiting = ""  # how long the last wait that was said would last
        ensure_private_dir(path.parent)
        if not path.exists():
            _create(path)
        elif path.stat().st_size == 0:
            # SQLite would take an empty file for a new store and forget every job.
            raise StoreError(f"the job store {path} is empty (truncated?); move it away "
                             f"(mv {path} {path}.broken) to start an empty one, or restore it "
                             "from a backup")
        try:
            # A short timeout per try: _transaction retries, saying that it waits.
            self._db = sqlite3.connect(path, timeout=0.2, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as error:
            raise _store_error(path, error) from None

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # executescript would commit the open transaction: run statements one by one.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version < SCHEMA_VERSION:
                for step in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[step]:
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"the job store {self.path} was written by a newer tsubmit (schema {version}, "
                    f"this one knows {SCHEMA_VERSION}); upgrade tsubmit"
                )

    @contextmanager
    def _transaction(self, *, patient: bool = False) -> Iterator[None]:
        self._begin(patient=patient)
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _begin(self, *, patient: bool = False) -> None:
        """BEGIN IMMEDIATE, retried while another process writes, up to the busy
        timeout; PATIENT, for as long as it takes."""
        deadline = None if patient else time.monotonic() + self.busy_timeout
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise StoreError(
                        f"the job store {self.path} is locked by another process; waited "
                        f"{self.busy_timeout:g} s (TSUBMIT_STORE_TIMEOUT). Wait for it to finish, "
                        f"or find it with `fuser {self.path}`") from None
                how_long = ("as long as it takes: it must record what the nodes run" if patient
                            else f"up to {self.busy_timeout:g} s")
                if self._told_waiting != how_long:
                    self._told_waiting = how_long
                    print(f"tsubmit: waiting for the job store {self.path}, which another process "
                          f"is writing ({how_long}; find the holder with `fuser {self.path}`)",
                          file=sys.stderr, flush=True)
                time.sleep(0.1)

    @_guarded
    def save(self, *jobs: Job, patient: bool = False) -> None:
        """Insert or replace the jobs and all their ranks, in one transaction.
        PATIENT: wait for a locked store as long as it takes, for a record that
        must be written because the nodes already run what it says (a launch)."""
        with self._transaction(patient=patient):
            for job in jobs:
                self._write(job)

    @_guarded
    def save_if_unchanged(self, *jobs: Job) -> list[Job]:
        """Save each job only if nobody saved it since it was read; reload the
        others in place (they hold newer knowledge), except for what this copy
        owes the nodes: a pending action it changed is merged into the stored
        one (job.merged_pending), never dropped. Returns the reloaded ones."""
        reloaded = []
        with self._transaction():
            for job in jobs:
                row = self._db.execute("SELECT revision FROM jobs WHERE id = ?", (job.id,)).fetchone()
                if row is None:
                    continue  # deleted meanwhile: nothing to refresh
                if row["revision"] == job.revision:
                    self._write(job)
                    continue
                current = self._load(self._db.execute("SELECT * FROM jobs WHERE id = ?",
                                                      (job.id,)).fetchone())
                read = self._pending_read.get((job.id, job.revision))
                if job.pending != read:
                    current.pending = merged_pending(current.pending, read, job.pending)
                    self._write(current)
                job.__dict__.update(current.__dict__)
                reloaded.append(job)
        return reloaded

    def _write(self, job: Job) -> None:
        job.revision = self._db.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM jobs").fetchone()[0]
        self._pending_read[(job.id, job.revision)] = job.pending
        row = asdict(job)
        ranks = row.pop("ranks")
        for column in _JSON_COLUMNS:
            row[column] = json.dumps(row[column])
        self._db.execute(
            f"INSERT OR REPLACE INTO jobs ({', '.join(_JOB_COLUMNS)}) "
            f"VALUES ({', '.join(':' + c for c in _JOB_COLUMNS)})",
            row,
        )
        self._db.execute("DELETE FROM ranks WHERE job_id = ?", (job.id,))
        self._db.executemany(
            f"INSERT INTO ranks (job_id, {', '.join(_RANK_COLUMNS)}) "
            f"VALUES (:job_id, {', '.join(':' + c for c in _RANK_COLUMNS)})",
            [{"job_id": job.id, **rank, **{c: json.dumps(rank[c]) for c in _RANK_JSON_COLUMNS}}
             for rank in ranks],
        )

    @_guarded
    def delete(self, job_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    @_guarded
    def note_contact(self, answered: set[str], silent: set[str]) -> None:
        """Which hosts answered a playbook run, and which did not (since when
        they have not, and when they were last tried)."""
        if not answered and not silent:
            return
        now = time.time()
        with self._transaction():
            self._db.executemany("DELETE FROM silent_hosts WHERE host = ?", [(h,) for h in answered])
            self._db.executemany(
                "INSERT INTO silent_hosts (host, since, tried) VALUES (?, ?, ?) "
                "ON CONFLICT (host) DO UPDATE SET tried = excluded.tried",
                [(host, now, now) for host in silent])

    @_guarded
    def silent_hosts(self) -> dict[str, tuple[float, float]]:
        """{host: (silent since, last tried)} of the hosts whose last try found them silent."""
        return {row["host"]: (row["since"], row["tried"])
                for row in self._db.execute("SELECT * FROM silent_hosts")}

    @_guarded
    def jobs(self, *, where: str = "1", params: tuple = ()) -> list[Job]:
        """Jobs matching a SQL condition on the jobs table, newest first."""
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY created_at DESC", params
        ).fetchall()
        return [self._load(row) for row in rows]

    def _load(self, row: sqlite3.Row) -> Job:
        values = dict(row)
        for column in _JSON_COLUMNS:
            values[column] = json.loads(values[column])
        rank_rows = self._db.execute(
            "SELECT * FROM ranks WHERE job_id = ? ORDER BY rank", (values["id"],)
        ).fetchall()
        ranks = [Rank(**{c: json.loads(r[c]) if c in _RANK_JSON_COLUMNS else r[c] for c in _RANK_COLUMNS})
                 for r in rank_rows]
        values["keep_going"] = bool(values["keep_going"])
        self._pending_read[(values["id"], values["revision"])] = values["pending"]
        return Job(**values, ranks=ranks)

    def find(self, ref: str) -> Job:
        """A job by full id, unique id prefix, or name (the newest job of that name)."""
        if not ref.strip():
            raise UsageError("give a job id, a unique id prefix or a job name")
        exact = self.jobs(where="id = ?", params=(ref,))
        if exact:
            return exact[0]
        by_prefix = self.jobs(where="id LIKE ? ESCAPE '\\'", params=(_like_prefix(ref),))
        by_name = self.jobs(where="name = ?", params=(ref,))
        if len(by_prefix) == 1 and not by_name:
            return by_prefix[0]
        if by_name and not by_prefix:
            return by_name[0]
        candidates = by_prefix + by_name
        if not candidates:
            raise UsageError(f"no job matches {ref!r}; see `tsubmit list --all`")
        listed = ", ".join(f"{job.id} ({job.name})" for job in candidates[:10])
        raise UsageError(f"{ref!r} is ambiguous; it matches: {listed}; give more of the id")


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _create(path: Path) -> None:
    """A new, empty store, mode 0600 from its first byte (it holds the jobs'
    environments), put in place by one rename so no reader sees it half made."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        db = sqlite3.connect(partial, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once, in the file
            db.execute("BEGIN")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)


def open_store() -> JobStore:
    from ..paths import state_dir
    from .runner_dirs import remove_stale_run_secrets

    remove_stale_run_secrets()
    return JobStore(state_dir() / "jobs.sqlite")
