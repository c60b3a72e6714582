"""Node failures for a replay: a trace of (time, node, duration) rows.

A failure trace is a CSV file with a header ``time_s,node,duration_s``: at
``time_s`` (seconds from the workload's origin) node ``node`` (its index in
the cluster, from 0) fails, and it is back ``duration_s`` seconds later.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FAILURE_DTYPE = np.dtype([("time_s", np.int64), ("node", np.int64), ("duration_s", np.int64)])
"""A node failure: when, which node (kernel index), and how long until it is back up."""

COLUMNS = ("time_s", "node", "duration_s")


class FailureTraceError(ValueError):
    """A failure trace is unreadable or invalid; the message names the file and row."""


def load_failures(path: str | Path) -> np.ndarray:
    """The failures of a CSV trace, sorted by time (FAILURE_DTYPE)."""
    import polars as pl

    path = Path(path)
    try:
        frame = pl.read_csv(path, infer_schema_length=0)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise FailureTraceError(f"{path}: cannot read the failure trace ({exc})") from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise FailureTraceError(
            f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})"
        )
    out = np.empty(frame.height, dtype=FAILURE_DTYPE)
    for column in COLUMNS:
        values = frame[column].str.strip_chars().cast(pl.Int64, strict=False)
        bad = values.is_null()
        if bad.any():
            row = int(bad.arg_max())  # type: ignore[arg-type]
            raise FailureTraceError(
                f"{path}:{row + 2}: {column} {frame[column][row]!r} is not an integer"
            )
        out[column] = values.to_numpy()
    for column, low in (("time_s", 0), ("node", 0), ("duration_s", 1)):
        below = np.flatnonzero(out[column] < low)
        if len(below):
            row = int(below[0])
            raise FailureTraceError(f"{path}:{row + 2}: {column} must be >= {low}")
    return np.sort(out, order="time_s", kind="stable")
