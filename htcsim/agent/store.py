"""The live agent's durable store: jobs, their dependencies and every state change, in SQLite.

Why SQLite in WAL mode with full synchronous commits: an accepted job must
survive a crash of the agent the moment the API has answered, readers (the
API) must not block the one writer (the scheduling loop), and an operator can
open the file with any SQLite tool. The schema is versioned with
``PRAGMA user_version``; opening an older file applies the missing
migrations in one transaction, and a file written by a newer htcsim is
refused rather than misread.

Every state change is an event (time, state, cause), so ``history`` tells
why a job is where it is, and a restart can reconcile from the last state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOB_STATES: tuple[str, ...] = (
    "pending",
    "held",
    "running",
    "completed",
    "failed",
    "cancelled",
    "timeout",
    "node_fail",
)
"""As ARCHITECTURE.md names them; the last five are final (node_fail: the
job's node failed and the policy did not requeue it)."""
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "node_fail"})
DEPENDENCY_KINDS = ("afterok", "afterany", "afternotok")

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, dependencies, the event log
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        command TEXT NOT NULL,            -- JSON list of arguments
        cwd TEXT NOT NULL,
        env TEXT NOT NULL DEFAULT '{}',   -- JSON object
        cores INTEGER NOT NULL,
        mem_mib INTEGER NOT NULL DEFAULT 0,
        gpus INTEGER NOT NULL DEFAULT 0,
        walltime_s INTEGER NOT NULL,
        qos TEXT NOT NULL DEFAULT '',
        array_id INTEGER,                 -- the first job of its array
        array_index INTEGER,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        submit_time REAL NOT NULL,
        start_time REAL,
        end_time REAL,
        exit_code INTEGER,
        node TEXT,
        requeues INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state ON jobs (state);
    CREATE INDEX jobs_user ON jobs (user, state);
    CREATE TABLE dependencies (
        child INTEGER NOT NULL REFERENCES jobs (id),
        parent INTEGER NOT NULL REFERENCES jobs (id),
        kind TEXT NOT NULL,
        delay_s INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (child, parent)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs (id),
        time REAL NOT NULL,
        state TEXT NOT NULL,
        cause TEXT NOT NULL
    );
    CREATE INDEX events_job ON events (job_id, id);
    """,
)
"""The schema, one entry per version; a new version appends an entry, never edits one."""

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The store file is unusable (newer schema, not SQLite); the message names the file."""


@dataclass(frozen=True)
class NewJob:
    """What a submission asks for; the store gives it an id and the state pending (or held)."""

    user: str
    command: Sequence[str]
    cwd: str
    cores: int
    walltime_s: int
    mem_mib: int = 0
    gpus: int = 0
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    qos: str = ""
    hold: bool = False
    array_index: int | None = None
    # (parent id, kind, delay): parents named by id; ``after`` below by position
    depends_on: tuple[tuple[int, str, int], ...] = ()
    after: tuple[tuple[int, str, int], ...] = ()  # (index in the same batch, kind, delay)


class AgentStore:
    """One SQLite file; the scheduling loop is its one writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # committed means on disk
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not an htcsim agent store ({exc})") from exc

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this htcsim knows "
                f"({SCHEMA_VERSION}); upgrade htcsim to open it"
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ writes

    def add_jobs(self, jobs: Sequence[NewJob], *, now: float | None = None) -> list[int]:
        """Accept a batch atomically (all or none): ids in order. A job array is
        a batch whose jobs carry ``array_index``; its ``array_id`` is its first id."""
        now = time.time() if now is None else now
        ids: list[int] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            array_id: int | None = None
            for job in jobs:
                state = "held" if job.hold else "pending"
                cursor = self._db.execute(
                    "INSERT INTO jobs (user, name, command, cwd, env, cores, mem_mib, gpus, "
                    "walltime_s, qos, array_index, state, reason, submit_time) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.user,
                        job.name,
                        json.dumps(list(job.command)),
                        job.cwd,
                        json.dumps(job.env, sort_keys=True),
                        job.cores,
                        job.mem_mib,
                        job.gpus,
                        job.walltime_s,
                        job.qos,
                        job.array_index,
                        state,
                        "Held" if job.hold else "",
                        now,
                    ),
                )
                job_id = int(cursor.lastrowid or 0)
                if job.array_index is not None:
                    array_id = job_id if array_id is None else array_id
                    self._db.execute(
                        "UPDATE jobs SET array_id = ? WHERE id = ?", (array_id, job_id)
                    )
                ids.append(job_id)
                self._event(job_id, now, state, "submitted" + (" (held)" if job.hold else ""))
            for job, job_id in zip(jobs, ids, strict=True):
                edges = list(job.depends_on) + [(ids[k], kind, d) for k, kind, d in job.after]
                for parent, kind, delay in edges:
                    if kind not in DEPENDENCY_KINDS:
                        raise ValueError(f"job {job_id}: unknown dependency kind {kind!r}")
                    self._db.execute(
                        "INSERT INTO dependencies VALUES (?, ?, ?, ?)",
                        (job_id, parent, kind, delay),
                    )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return ids

    def set_state(
        self, job_id: int, state: str, cause: str, *, now: float | None = None, **fields: Any
    ) -> None:
        """Move a job to ``state`` for ``cause`` (recorded as an event), with
        the other columns given (start_time, end_time, exit_code, node, reason...)."""
        if state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r} (known: {', '.join(JOB_STATES)})")
        allowed = {"reason", "start_time", "end_time", "exit_code", "node", "requeues"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(
                f"cannot set {', '.join(sorted(unknown))} (settable: {sorted(allowed)})"
            )
        now = time.time() if now is None else now
        columns = ", ".join(f"{name} = ?" for name in ("state", *fields))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                f"UPDATE jobs SET {columns} WHERE id = ?", (state, *fields.values(), job_id)
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no job {job_id}")
            self._event(job_id, now, state, cause)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _event(self, job_id: int, now: float, state: str, cause: str) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, time, state, cause) VALUES (?, ?, ?, ?)",
            (job_id, now, state, cause),
        )

    # ------------------------------------------------------------------ reads

    def job(self, job_id: int) -> dict[str, Any]:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id}")
        return _job_dict(row)

    def jobs(
        self,
        *,
        states: Sequence[str] = (),
        user: str | None = None,
        limit: int = 100,
        after_id: int = 0,
    ) -> list[dict[str, Any]]:
        """Jobs in id order, filtered, one page (``after_id``: the last id of the previous page)."""
        query = "SELECT * FROM jobs WHERE id > ?"
        args: list[Any] = [after_id]
        if states:
            query += f" AND state IN ({', '.join('?' * len(states))})"
            args += list(states)
        if user is not None:
            query += " AND user = ?"
            args.append(user)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_job_dict(row) for row in self._db.execute(query, args)]

    def dependencies(self, job_id: int) -> list[tuple[int, str, int]]:
        """(parent, kind, delay) of a job."""
        return [
            (int(r["parent"]), str(r["kind"]), int(r["delay_s"]))
            for r in self._db.execute(
                "SELECT parent, kind, delay_s FROM dependencies WHERE child = ? ORDER BY parent",
                (job_id,),
            )
        ]

    def history(self, job_id: int) -> list[tuple[float, str, str]]:
        """(time, state, cause) of every change of a job, oldest first."""
        self.job(job_id)  # KeyError for an unknown job
        return [
            (float(r["time"]), str(r["state"]), str(r["cause"]))
            for r in self._db.execute(
                "SELECT time, state, cause FROM events WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state listed)."""
        out = dict.fromkeys(JOB_STATES, 0)
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            out[str(row["state"])] = int(row["n"])
        return out


def _job_dict(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["command"] = json.loads(job["command"])
    job["env"] = json.loads(job["env"])
    return job
