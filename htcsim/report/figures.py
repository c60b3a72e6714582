"""What the three figures of a replay show, as a few hundred numbers and their labels.

``htcsim.report.plots`` draws them. The two are apart so that the drawing can
run in another process (``htcsim.report.results`` renders the PNGs there while
it writes the tables): what crosses is this module's small frozen records,
not the replay, and the drawing process imports matplotlib and numpy only.
This module imports neither matplotlib nor (until a record is built) polars.

Long traces have millions of state changes; the over-time figures show
time-weighted means per bin (:func:`htcsim.metrics.resample_time_series`),
with the bin chosen from the trace's span so a figure has at most a few
hundred points, and the bin named in the axis label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl

    from htcsim.schedule import SimResult

SECONDS_PER_DAY = 86_400

MAX_BINS = 400
"""Upper bound on points in an over-time plot: readable and fast to draw."""

BIN_CHOICES_S: tuple[tuple[int, str], ...] = (
    (60, "1-minute"),
    (600, "10-minute"),
    (3_600, "1-hour"),
    (6 * 3_600, "6-hour"),
    (SECONDS_PER_DAY, "1-day"),
    (7 * SECONDS_PER_DAY, "1-week"),
    (30 * SECONDS_PER_DAY, "30-day"),
)
"""Bin widths in calendar units people read, smallest first."""

ECDF_MAX_POINTS = 4_000
"""A million-job ECDF drawn from this many order statistics is visually exact."""


def choose_bin(span_s: float) -> tuple[int, str]:
    """The smallest calendar bin that keeps a span of ``span_s`` within ``MAX_BINS`` bins."""
    for bin_s, name in BIN_CHOICES_S:
        if span_s / bin_s <= MAX_BINS:
            return bin_s, name
    return BIN_CHOICES_S[-1]


@dataclass(frozen=True)
class Mark:
    """A vertical line at ``value_s`` (drawn at 1 s at least, on a log axis)."""

    value_s: float
    label: str
    color: str
    style: str


@dataclass(frozen=True)
class WaitFigure:
    """The ECDF of waits: ``x`` (waits, at least 1 s) and ``y`` (fraction) at up
    to ECDF_MAX_POINTS order statistics of the ``n_started`` waits."""

    title: str
    n_started: int
    x: np.ndarray
    y: np.ndarray
    marks: tuple[Mark, ...]
    note: str
    longest_s: float


@dataclass(frozen=True)
class StepFigure:
    """Bin means over time as post-step lines: ``days`` (bin starts, then the last
    event), one ``(label, values)`` per line, the values' last repeated."""

    title: str
    bin_name: str
    days: np.ndarray
    lines: tuple[tuple[str, np.ndarray], ...]
    overall: float | None = None  # utilization: the run's time-weighted mean
    peak: float | None = None  # utilization: the highest bin mean


@dataclass(frozen=True)
class ResultFigures:
    """The three figures of ``htcsim simulate --out``."""

    wait: WaitFigure
    utilization: StepFigure
    queue: StepFigure


def _title(result: SimResult, what: str) -> str:
    return f"{what}: {result.workload.name} under {result.policy.label}"


def wait_figure(result: SimResult) -> WaitFigure:
    """The waits of the started jobs, with the mean and the 95th percentile marked.

    Zero waits cannot sit on a log axis: waits under 1 s are drawn at 1 s and
    their share is stated in the note.
    """
    from htcsim.metrics import format_duration

    start = result.first_start_s  # (a run a node failure cut short is not a wait)
    started = start >= 0
    wait = np.sort((start - result.workload.jobs["submit_s"])[started]).astype(np.float64)
    title = _title(result, "Wait distribution")
    n = int(wait.size)
    if n == 0:
        empty = np.empty(0)
        return WaitFigure(title, 0, empty, empty, (), "", 0.0)
    idx = np.unique(np.linspace(0, n - 1, min(n, ECDF_MAX_POINTS)).astype(np.int64))
    marks = tuple(
        Mark(value, f"{name}: {format_duration(value)}", color, style)
        for value, name, color, style in (
            (float(wait.mean()), "mean", "tab:red", "--"),
            (float(np.percentile(wait, 95)), "95th percentile", "tab:purple", ":"),
        )
    )
    not_started = int(np.count_nonzero(~started))
    note = f"{np.mean(wait < 1):.1%} of started jobs waited < 1 s (drawn at 1 s)"
    if not_started:
        note += f"\n{not_started} job(s) never started (not shown)"
    return WaitFigure(
        title=title,
        n_started=n,
        x=np.maximum(wait[idx], 1.0),
        y=(idx + 1) / n,
        marks=marks,
        note=note,
        longest_s=float(wait[-1]),
    )


def _binned(
    result: SimResult, series: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(raw step series, its bin means, the bin's name)."""
    from htcsim.metrics import resample_time_series
    from htcsim.schedule import time_series

    ts = time_series(result) if series is None else series
    if ts.height == 0:
        return ts, ts, ""
    span = float(ts["time_s"][-1] - ts["time_s"][0])
    bin_s, name = choose_bin(span)
    return ts, resample_time_series(ts, bin_s), name


def _steps(raw: pl.DataFrame, binned: pl.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Bin means as a post-step line in days, closed at the last event so the last bin shows."""
    days = np.append(binned["time_s"].to_numpy(), raw["time_s"][-1]) / SECONDS_PER_DAY
    values = binned[column].to_numpy()
    return days, np.append(values, values[-1])


def overall_mean(series: pl.DataFrame, column: str) -> float:
    """Time-weighted mean of a step column from the first to the last event.

    For a replay that ran to completion this is exactly ``summarize``'s
    utilization: the span is first submit to last end.
    """
    t = series["time_s"].to_numpy()
    if t.size < 2 or t[-1] == t[0]:
        return float(series[column][0])
    values = series[column].to_numpy()[:-1]
    return float(np.sum(values * np.diff(t)) / (t[-1] - t[0]))


def over_time_figures(
    result: SimResult, series: pl.DataFrame | None = None
) -> tuple[StepFigure, StepFigure]:
    """(utilization, queue) per bin over the trace, from ``series`` (a
    :func:`htcsim.schedule.time_series`; computed from ``result`` when None)."""
    raw, binned, bin_name = _binned(result, series)
    empty = np.empty(0)
    if not binned.height:
        return (
            StepFigure(_title(result, "Utilization"), bin_name, empty, ()),
            StepFigure(_title(result, "Queue"), bin_name, empty, ()),
        )
    days, util = _steps(raw, binned, "utilization")
    peak = binned["utilization"].max()
    utilization = StepFigure(
        _title(result, "Utilization"),
        bin_name,
        days,
        ((f"{bin_name} mean", util),),
        overall=overall_mean(raw, "utilization"),
        peak=float(peak or 0.0),  # type: ignore[arg-type]
    )
    queue = StepFigure(
        _title(result, "Queue"),
        bin_name,
        days,
        tuple(
            (label, _steps(raw, binned, column)[1])
            for column, label in (("queued_jobs", "queued jobs"), ("running_jobs", "running jobs"))
        ),
    )
    return utilization, queue


def result_figures(result: SimResult, series: pl.DataFrame | None = None) -> ResultFigures:
    """The three figures' content (a few hundred points each, whatever the trace)."""
    utilization, queue = over_time_figures(result, series)
    return ResultFigures(wait_figure(result), utilization, queue)
