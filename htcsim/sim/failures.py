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


def failure_model(
    n_nodes: int, mtbf_s: float, mttr_s: float, horizon_s: int, *, seed: int, start_s: int = 0
) -> np.ndarray:
    """Failures of ``n_nodes`` independent nodes over [start_s, start_s + horizon_s).

    Each node alternates up times drawn from an exponential law of mean
    ``mtbf_s`` and repair times of mean ``mttr_s`` (at least one second), the
    classic alternating-renewal model; ``seed`` fixes every draw. Sorted by time.
    """
    if n_nodes <= 0 or not mtbf_s > 0 or not mttr_s > 0 or horizon_s <= 0:
        raise ValueError("n_nodes, mtbf_s, mttr_s and horizon_s must be positive")
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, int]] = []
    for node in range(n_nodes):
        t = float(start_s)
        end = start_s + horizon_s
        while True:
            t += rng.exponential(mtbf_s)
            if t >= end:
                break
            repair = max(1, round(rng.exponential(mttr_s)))
            rows.append((int(t), node, repair))
            t += repair
    out = np.array(rows, dtype=FAILURE_DTYPE)
    return np.sort(out, order="time_s", kind="stable")
