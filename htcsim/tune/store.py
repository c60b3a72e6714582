"""A study's trials in SQLite, so that an interrupted study resumes where it stopped.

A trial is keyed by the workload part it replayed and its parameter values.
The optimizers are deterministic given their seed, so a resumed study asks
for the same points in the same order; the ones already stored are read back
instead of replayed, and the study ends exactly as an uninterrupted one.
The study's identity (trace, space, objective, seed...) is stored with it: a
file that belongs to another study is refused rather than mixed in.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    part TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT,
    error TEXT,
    seconds REAL NOT NULL,
    UNIQUE (part, params)
);
"""


class StudyStoreError(ValueError):
    """The study file is unreadable or belongs to another study."""


def _dumps(value: Any) -> str:
    """JSON with infinities and nan spelled as strings (strict JSON has none)."""

    def safe(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return repr(v)
        if isinstance(v, dict):
            return {k: safe(x) for k, x in v.items()}
        return v

    return json.dumps(safe(value), sort_keys=True)


def _loads(text: str) -> Any:
    def back(v: Any) -> Any:
        if v in ("inf", "-inf", "nan"):
            return float(v)
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        return v

    return back(json.loads(text))


class StudyStore:
    """Trials in a SQLite file (or in memory without a path)."""

    def __init__(self, path: str | Path | None, identity: dict[str, Any]) -> None:
        self.path = Path(path) if path is not None else None
        try:
            self._db = sqlite3.connect(str(path) if path is not None else ":memory:")
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA journal_mode=WAL")
            # a trial lost to a power cut is replayed on resume; no fsync per trial
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StudyStoreError(f"{path}: not a study file ({exc})") from exc
        stored = dict(self._db.execute("SELECT name, value FROM study").fetchall())
        wanted = {name: _dumps(value) for name, value in identity.items()}
        if stored and stored != wanted:
            differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise StudyStoreError(
                f"{path}: holds another study (it differs in {', '.join(differ)}); "
                "use a new --study file or the same settings to resume"
            )
        if not stored:
            with self._db:
                self._db.executemany("INSERT INTO study VALUES (?, ?)", wanted.items())

    def close(self) -> None:
        self._db.close()

    def get(
        self, part: str, params: dict[str, Any]
    ) -> tuple[dict[str, float] | None, str | None] | None:
        """(metrics, error) of a stored trial, or None if it was never run."""
        row = self._db.execute(
            "SELECT metrics, error FROM trials WHERE part = ? AND params = ?",
            (part, _dumps(params)),
        ).fetchone()
        if row is None:
            return None
        return (None if row[0] is None else _loads(row[0])), row[1]

    def put(
        self,
        part: str,
        params: dict[str, Any],
        metrics: dict[str, float] | None,
        error: str | None,
        seconds: float,
    ) -> None:
        """Store a trial (committed at once: an interruption loses nothing stored)."""
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO trials (part, params, metrics, error, seconds) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    part,
                    _dumps(params),
                    None if metrics is None else _dumps(metrics),
                    error,
                    seconds,
                ),
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def rows(self) -> list[dict[str, Any]]:
        """Every trial in the order it was first run."""
        out = []
        for number, part, params, metrics, error, seconds in self._db.execute(
            "SELECT number, part, params, metrics, error, seconds FROM trials ORDER BY number"
        ):
            out.append(
                {
                    "number": number,
                    "part": part,
                    "params": _loads(params),
                    "metrics": None if metrics is None else _loads(metrics),
                    "error": error,
                    "seconds": seconds,
                }
            )
        return out
