"""Usage accounting from the agent's store: sreport/sacct-like reports and SWF export.

Why from the store and not from metrics: the store holds every finished job
with its submit, start and end times, so a report over any past window can be
recomputed exactly and agrees with ``htcsim jobs``; metrics are sampled and
lossy. The unit of selection is a job that *ended* in the window (as sacct
with ``--state`` and an end window): a job still running at the end of the
window is not counted yet, so figures are final once a window has passed.

The SWF export turns the live history into the simulator's input format, so
the workload a site really ran can be replayed under other policies
(``htcsim simulate``), the loop the project exists for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from htcsim.agent.store.jobs import FINAL_STATES, AgentStore
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.units import parse_duration
from htcsim.workload.swf_writer import write_workload_swf

__all__ = [
    "SWF_STATUS",
    "UsageReport",
    "export_swf",
    "parse_since",
    "print_usage",
    "render_usage",
    "usage_report",
]

SWF_STATUS: dict[str, int] = {
    "completed": 1,
    "failed": 0,
    "timeout": 0,
    "node_fail": 0,
    "cancelled": 5,
}
"""SWF field 11 of each final state: 1 completed, 0 failed, 5 cancelled."""

_RELATIVE = re.compile(r"\s*(?:\d+(?:\.\d*)?|\.\d+)\s*[a-zA-Z].*")
_COUNTED_STATES: tuple[str, ...] = ("completed", "failed", "cancelled", "timeout", "node_fail")

_SCHEMA: dict[str, Any] = {
    "user": pl.String,
    "group": pl.String,
    "state": pl.String,
    "cores": pl.Int64,
    "submit": pl.Float64,
    "start": pl.Float64,
    "end": pl.Float64,
    "cpu_time_s": pl.Float64,
}


def parse_since(text: str, now: float) -> float:
    """Unix time from "7d", "12h", "30m" (that long before ``now``), "now", a date
    ("2026-11-01", midnight local time) or an ISO datetime (local unless it gives
    an offset or Z).

    A bare number is refused rather than guessed: "90" could be seconds ago or
    a Unix time, and a report over the wrong window looks plausible.
    """
    cleaned = text.strip()
    if cleaned.lower() == "now":
        return now
    if _RELATIVE.fullmatch(cleaned):
        try:
            return now - parse_duration(cleaned)
        except ValueError:
            pass
    else:
        try:
            moment = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment.timestamp()  # naive: local time
    raise ValueError(
        f"cannot read {text!r} as a time; give e.g. 7d, 12h, 30m (that long ago), "
        "now, 2026-11-01 or 2026-11-01T08:00:00"
    )


# ----------------------------------------------------------------------- reports


@dataclass(frozen=True)
class UsageReport:
    """Usage of the jobs that ended in [since, until).

    ``users`` and ``groups`` have one row per user (group): jobs, completed,
    failed, cancelled, timeout, node_fail, core_hours (cores x run time),
    cpu_hours (measured CPU time, where known), mean/median/p95 wait in
    seconds (start - submit, jobs that started only; p95 interpolated
    linearly, as numpy's default). ``summary`` is one row of the same figures
    over everyone plus max wait and utilization; ``utilization`` is the core
    seconds used inside the window over ``total_cores`` x the window.
    """

    since: float
    until: float
    total_cores: int
    users: pl.DataFrame
    groups: pl.DataFrame
    summary: pl.DataFrame
    utilization: float

    def to_csv(self, directory: str | Path) -> list[Path]:
        """Write users.csv, groups.csv and summary.csv into ``directory`` (created)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, frame in (
            ("users", self.users),
            ("groups", self.groups),
            ("summary", self.summary),
        ):
            path = directory / f"{name}.csv"
            frame.write_csv(path)
            paths.append(path)
        return paths


def _finished_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """The columns accounting needs, from store rows in a final state."""
    final = [r for r in rows if r["state"] in FINAL_STATES]
    return pl.DataFrame(
        {
            "user": [r["user"] for r in final],
            "group": [r["grp"] for r in final],
            "state": [r["state"] for r in final],
            "cores": [r["cores"] for r in final],
            "submit": [r["submit_time"] for r in final],
            "start": [r["start_time"] for r in final],
            "end": [r["end_time"] for r in final],
            "cpu_time_s": [r["cpu_time_s"] for r in final],
        },
        schema=_SCHEMA,
    )


def _figures() -> list[pl.Expr]:
    """Aggregations shared by the per-user, per-group and overall tables."""
    wait = pl.col("wait_s")
    return [
        pl.len().cast(pl.Int64).alias("jobs"),
        *((pl.col("state") == s).sum().cast(pl.Int64).alias(s) for s in _COUNTED_STATES),
        (pl.col("core_s").sum() / 3600).alias("core_hours"),
        (pl.col("cpu_time_s").sum() / 3600).alias("cpu_hours"),
        wait.mean().alias("mean_wait_s"),
        wait.median().alias("median_wait_s"),
        wait.quantile(0.95, "linear").alias("p95_wait_s"),
    ]


def usage_report(store: AgentStore, since: float, until: float, *, total_cores: int) -> UsageReport:
    """Usage per user and group of the jobs that ended in [since, until).

    Jobs cancelled before they started count as jobs (and as cancelled) but
    have no wait and no core hours. Utilization counts only the part of each
    run inside the window, so a job that started before ``since`` is not
    charged to it twice across consecutive reports.
    """
    if total_cores <= 0:
        raise ValueError(f"total_cores must be positive, got {total_cores}")
    if until <= since:
        raise ValueError(f"the window is empty: until ({until}) <= since ({since})")
    frame = _finished_frame(store.finished_between(since, until)).with_columns(
        (pl.col("start") - pl.col("submit")).alias("wait_s"),
        (pl.col("cores") * (pl.col("end") - pl.col("start"))).alias("core_s"),
        # min/max_horizontal skip nulls: a job that never started must give 0, not a
        # run from `since` to its cancellation
        pl.when(pl.col("start").is_not_null())
        .then(
            pl.col("cores")
            * (
                pl.min_horizontal(pl.col("end"), pl.lit(until))
                - pl.max_horizontal(pl.col("start"), pl.lit(since))
            ).clip(lower_bound=0)
        )
        .alias("window_core_s"),
    )
    used = float(frame.get_column("window_core_s").sum() or 0.0)
    utilization = used / (total_cores * (until - since))

    def per(key: str) -> pl.DataFrame:
        return (
            frame.group_by(key).agg(_figures()).sort(["core_hours", key], descending=[True, False])
        )

    summary = frame.select(
        *_figures(),
        pl.col("wait_s").count().cast(pl.Int64).alias("started"),
        pl.col("wait_s").max().alias("max_wait_s"),
    ).with_columns(pl.lit(utilization).alias("utilization"))
    return UsageReport(
        since=since,
        until=until,
        total_cores=total_cores,
        users=per("user"),
        groups=per("group"),
        summary=summary,
        utilization=utilization,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _table(title: str, frame: pl.DataFrame) -> Table:
    table = Table(title=title)
    for name, dtype in frame.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    return table


SHOWN = ("jobs", "completed", "failed", "core_hours", "cpu_hours", "mean_wait_s", "p95_wait_s")
"""Per user and group on screen (80 columns); the CSV files hold every column."""


def _summary_table(title: str, frame: pl.DataFrame) -> Table:
    """One row of figures, shown as name / value lines (it would not fit across)."""
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in zip(frame.columns, frame.row(0), strict=True):
        table.add_row(name, _cell(value))
    return table


def render_usage(report: UsageReport) -> list[Table]:
    """Rich tables: the overall summary, then per user, then per group."""
    window = (
        f"{datetime.fromtimestamp(report.since):%Y-%m-%d %H:%M} - "
        f"{datetime.fromtimestamp(report.until):%Y-%m-%d %H:%M}"
    )
    summary = report.summary.with_columns(pl.col("utilization") * 100).rename(
        {"utilization": "utilization_%"}
    )
    short = {
        "completed": "done",
        "core_hours": "core_h",
        "cpu_hours": "cpu_h",
        "mean_wait_s": "wait_s",
        "p95_wait_s": "p95_wait",
    }
    users = report.users.select("user", *SHOWN).rename(short)
    groups = report.groups.select("group", *SHOWN).rename(short)
    return [
        _summary_table(f"Usage, {report.total_cores} cores\n{window}", summary),
        _table("Per user (all columns: --csv)", users),
        _table("Per group", groups),
    ]


def print_usage(report: UsageReport, console: Console | None = None) -> None:
    """Print ``render_usage`` tables (for ``htcsim report --since``)."""
    console = console or Console()
    for table in render_usage(report):
        console.print(table)


# --------------------------------------------------------------------------- SWF


def _dense(values: Sequence[str], *, blank_unknown: bool) -> np.ndarray:
    """1..K by first appearance; "" is -1 (unknown) when ``blank_unknown``."""
    seen: dict[str, int] = {}
    out = np.empty(len(values), dtype=np.int64)
    for k, value in enumerate(values):
        if blank_unknown and value == "":
            out[k] = -1
            continue
        out[k] = seen.setdefault(value, len(seen) + 1)
    return out


def export_swf(
    store: AgentStore,
    since: float,
    until: float,
    path: Path,
    *,
    total_cores: int,
    n_nodes: int | None = None,
) -> int:
    """Write the jobs that ended in [since, until) as an SWF log; returns how many.

    Built as a job table and written by ``htcsim.workload.swf_writer.write_workload_swf``,
    the same writer as for generated workloads, so the file is exactly what
    ``read_swf`` and the simulator read. Jobs are numbered 1..n in submit
    order; field 2 is seconds since the first submit (``UnixStartTime`` in the
    header); users, executables (``command[0]``) and QoS are numbered densely
    by first appearance; an empty group or QoS is -1. Field 17 is the SWF
    number of the job's first afterok/afterany parent when that parent is in
    the file. A job cancelled before it started has wait and run -1 (replays
    drop it, as for any log). ``n_nodes`` only shapes the MaxNodes header.
    """
    if total_cores <= 0:
        raise ValueError(f"total_cores must be positive, got {total_cores}")
    rows = sorted(
        (r for r in store.finished_between(since, until) if r["state"] in FINAL_STATES),
        key=lambda r: (r["submit_time"], r["id"]),
    )
    n = len(rows)
    t0 = math.floor(min((r["submit_time"] for r in rows), default=since))
    number = {int(r["id"]): k + 1 for k, r in enumerate(rows)}
    preceding = dict.fromkeys(number, -1)
    for child, parent, kind, _ in sorted(store.all_dependencies(list(number))):
        if kind in ("afterok", "afterany") and parent in number and preceding[child] < 0:
            preceding[child] = number[parent]

    jobs = empty_jobs(n)
    cores = np.array([max(int(r["cores"]), 1) for r in rows], dtype=np.int64)
    jobs["job_id"] = np.arange(1, n + 1)
    jobs["submit_s"] = [math.floor(r["submit_time"]) - t0 for r in rows]
    started = [r["start_time"] is not None for r in rows]
    jobs["recorded_wait_s"] = [
        round(r["start_time"] - r["submit_time"]) if s else -1
        for r, s in zip(rows, started, strict=True)
    ]
    jobs["run_s"] = [
        round(r["end_time"] - r["start_time"]) if s else -1
        for r, s in zip(rows, started, strict=True)
    ]
    jobs["recorded_alloc"] = cores
    jobs["n_tasks"] = 1  # one task of `cores` processors: fields 5 and 8 = cores
    jobs["cores_per_task"] = cores
    jobs["walltime_s"] = [int(r["walltime_s"]) for r in rows]
    jobs["mem_mib_per_task"] = [int(r["mem_mib"]) for r in rows]  # field 10 = per processor
    jobs["avg_cpu_s"] = [
        r["cpu_time_s"] / c if r["cpu_time_s"] is not None else -1
        for r, c in zip(rows, cores, strict=True)
    ]
    jobs["used_mem_kib"] = [
        r["max_rss_mib"] * 1024 / c if r["max_rss_mib"] is not None else -1
        for r, c in zip(rows, cores, strict=True)
    ]
    jobs["status"] = [SWF_STATUS[r["state"]] for r in rows]
    jobs["user_id"] = _dense([r["user"] for r in rows], blank_unknown=False)
    jobs["group_id"] = _dense([r["grp"] for r in rows], blank_unknown=True)
    jobs["executable_id"] = _dense(
        [r["command"][0] if r["command"] else "" for r in rows], blank_unknown=True
    )
    jobs["queue_id"] = _dense([r["qos"] for r in rows], blank_unknown=True)
    jobs["partition_id"] = -1
    jobs["preceding_job_id"] = [preceding[int(r["id"])] for r in rows]
    jobs["think_time_s"] = -1

    workload = Workload(
        name="htcsim agent",
        jobs=jobs,
        machine=Machine.from_procs(total_cores, n_nodes),
        unix_start_time=t0,
        header={"Computer": "htcsim agent"},
    )
    write_workload_swf(
        path,
        workload,
        comment=f"jobs of {store.path.name} that ended in [{since:.0f}, {until:.0f})",
    )
    return n
