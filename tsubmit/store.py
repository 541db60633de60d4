"""The local job store: one SQLite file in the state dir.

WAL mode and a busy timeout let several tsubmit processes (a user's shell and
cron) read and write at once. The schema version lives in PRAGMA user_version
so a newer tsubmit can migrate an older file.
"""

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from .errors import UsageError
from .job import Job, Rank

SCHEMA_VERSION = 2

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
    ended_at REAL
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
    PRIMARY KEY (job_id, rank)
);
"""

# Each step brings a store of the previous version up to the next.
_MIGRATIONS = {
    1: ["ALTER TABLE jobs ADD COLUMN extras TEXT NOT NULL DEFAULT '{}'"],
}
_JSON_COLUMNS = ("inventory", "command", "env", "extras")
_JOB_COLUMNS = [f.name for f in fields(Job) if f.name != "ranks"]
_RANK_COLUMNS = [f.name for f in fields(Rank)]


class JobStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

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
                raise UsageError(
                    f"the job store was written by a newer tsubmit (schema {version}); upgrade tsubmit"
                )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save(self, *jobs: Job) -> None:
        """Insert or replace the jobs and all their ranks, in one transaction."""
        with self._transaction():
            for job in jobs:
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
                    [{"job_id": job.id, **rank} for rank in ranks],
                )

    def delete(self, job_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

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
        ranks = [Rank(**{c: r[c] for c in _RANK_COLUMNS}) for r in rank_rows]
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


def open_store() -> JobStore:
    from .paths import state_dir

    return JobStore(state_dir() / "jobs.sqlite")
