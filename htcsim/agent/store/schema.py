"""The agent store's file: its schema, the migrations between its versions, and
how it is opened.

Why SQLite in WAL mode with full synchronous commits: an accepted job must
survive a crash of the agent the moment the API has answered, readers (the
API) must not block the one writer (the scheduling loop), and an operator can
open the file with any SQLite tool. The schema is versioned with
``PRAGMA user_version``; opening an older file applies the missing
migrations in one transaction, and a file written by a newer htcsim is
refused rather than misread. What is read and written in the file is
``htcsim.agent.store.jobs``.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import suppress
from pathlib import Path

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
    # 2: the live agent's run details, the decision log, samples, audits, workflows
    """
    ALTER TABLE jobs ADD COLUMN grp TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN stdout TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN stderr TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN signal TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN signal_before_s INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN pid INTEGER;
    ALTER TABLE jobs ADD COLUMN cpu_time_s REAL;
    ALTER TABLE jobs ADD COLUMN max_rss_mib REAL;
    ALTER TABLE jobs ADD COLUMN workflow_id INTEGER REFERENCES workflows (id);
    CREATE TABLE workflows (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        user TEXT NOT NULL,
        submit_time REAL NOT NULL,
        UNIQUE (user, name)
    );
    CREATE INDEX jobs_workflow ON jobs (workflow_id);
    CREATE INDEX jobs_end ON jobs (end_time);
    CREATE TABLE decisions (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,            -- the kernel's clock (integer seconds)
        op TEXT NOT NULL,
        job_id INTEGER,
        data TEXT NOT NULL DEFAULT '{}'   -- JSON
    );
    CREATE TABLE node_samples (
        time REAL NOT NULL,
        node TEXT NOT NULL,
        cpu_percent REAL NOT NULL,
        mem_used_mib REAL NOT NULL
    );
    CREATE INDEX node_samples_time ON node_samples (time);
    CREATE TABLE policy_audit (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        user TEXT NOT NULL,
        policy TEXT NOT NULL,             -- the TOML text now in force
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: Idempotency-Key of submissions: a retried request returns the first one's jobs
    """
    CREATE TABLE idempotency (
        user TEXT NOT NULL,
        key TEXT NOT NULL,
        request TEXT NOT NULL,            -- SHA-256 hex of the request (route and body)
        answer TEXT NOT NULL,             -- JSON: what the first request answered
        time REAL NOT NULL,
        PRIMARY KEY (user, key)
    );
    CREATE INDEX idempotency_time ON idempotency (time);
    """,
    # 4: the Unix account a job runs as (resolved at submit), its GPU devices
    """
    ALTER TABLE jobs ADD COLUMN account TEXT NOT NULL DEFAULT '';  -- '': the agent's own
    ALTER TABLE jobs ADD COLUMN uid INTEGER;                        -- NULL: the agent's own
    ALTER TABLE jobs ADD COLUMN gpu_ids TEXT;                       -- JSON list, set at start
    """,
)
"""The schema, one entry per version; a new version appends an entry, never edits one."""

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(RuntimeError):
    """The store file is unusable (newer schema, not SQLite); the message names the file."""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """The store file at ``path``, created and migrated to ``SCHEMA_VERSION`` unless
    ``readonly`` (then only checked not to be newer); rows read as ``sqlite3.Row``."""
    if not readonly:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the store holds every user's jobs (their environments): the agent's alone;
        # SQLite creates the -wal and -shm files with the mode of this one
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        db.row_factory = sqlite3.Row
        if readonly:
            # the API's readers: a text value that is not UTF-8 (written by another
            # tool) reads with replacement characters instead of failing every request
            db.text_factory = _text
        if not readonly:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # committed means on disk
        db.execute("PRAGMA foreign_keys=ON")
        if readonly:
            _check_version(db, path)
        else:
            _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not an htcsim agent store ({exc})") from exc
    return db


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _check_version(db: sqlite3.Connection, path: Path) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this htcsim knows "
            f"({SCHEMA_VERSION}); upgrade htcsim to open it"
        )
    return version


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    version = _check_version(db, path)
    if version == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for script in MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
