"""A study's trials in SQLite, so that an interrupted study resumes where it stopped.

A trial is keyed by the workload part it replayed and its parameter values,
and numbered by the study in the order it first asked for it. Each trial is
committed as it ends, so a study killed in the middle of a batch keeps every
trial that finished. The optimizers are deterministic given their seed, so a
resumed study asks for the same points in the same order; the ones already
stored are read back instead of replayed, and the study ends exactly as an
uninterrupted one.

A trial also records its effective policy (``htcsim.policy.effective_policy``
with the part it replayed): a later trial whose effective policy is the same
reuses that replay's result and names it in ``same_as`` instead of replaying.
The study's identity (trace, space, objective, constraints, seed...) is
stored with it: a file that belongs to another study is refused rather than
mixed in.
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
    number INTEGER PRIMARY KEY,
    part TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT,
    error TEXT,
    seconds REAL NOT NULL,
    effective TEXT,
    same_as INTEGER,
    UNIQUE (part, params)
);
"""
_INDEX = "CREATE INDEX IF NOT EXISTS trials_effective ON trials (effective)"


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


def key_of(value: Any) -> str:
    """The canonical text of a JSON-ready value, as the store keys trials by it."""
    return _dumps(value)


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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(trials)")}
            if "effective" not in columns:
                self._db.close()
                raise StudyStoreError(
                    f"{path}: a study file of an older htcsim (its trials record no "
                    "effective policy); use a new --study file"
                )
            self._db.execute(_INDEX)
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

    def get(self, part: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The stored trial of (part, params) (see ``rows``), or None if it was never run."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM trials WHERE part = ? AND params = ?",
            (part, _dumps(params)),
        ).fetchone()
        return None if row is None else _row(row)

    def replayed(self, effective: str) -> dict[str, Any] | None:
        """The trial that replayed this effective policy (``same_as`` null), or None."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM trials WHERE effective = ? AND same_as IS NULL "
            "ORDER BY number LIMIT 1",
            (effective,),
        ).fetchone()
        return None if row is None else _row(row)

    def put(
        self,
        number: int,
        part: str,
        params: dict[str, Any],
        metrics: dict[str, float] | None,
        error: str | None,
        seconds: float,
        *,
        effective: str | None = None,
        same_as: int | None = None,
    ) -> None:
        """Store a trial (committed at once: an interruption loses nothing stored)."""
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO trials "
                "(number, part, params, metrics, error, seconds, effective, same_as) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    number,
                    part,
                    _dumps(params),
                    None if metrics is None else _dumps(metrics),
                    error,
                    seconds,
                    effective,
                    same_as,
                ),
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])

    def rows(self) -> list[dict[str, Any]]:
        """Every trial in the order the study first asked for it: number, part,
        params, metrics, error, seconds (0 for a reused result) and same_as."""
        return [
            _row(row) for row in self._db.execute(f"SELECT {_COLUMNS} FROM trials ORDER BY number")
        ]


_COLUMNS = "number, part, params, metrics, error, seconds, same_as"


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    number, part, params, metrics, error, seconds, same_as = row
    return {
        "number": number,
        "part": part,
        "params": _loads(params),
        "metrics": None if metrics is None else _loads(metrics),
        "error": error,
        "seconds": seconds,
        "same_as": same_as,
    }
