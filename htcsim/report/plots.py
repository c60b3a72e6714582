"""PNG figures of one replay, for reports and for a quick look after ``htcsim simulate``.

Rendering is headless: the Agg backend is selected before pyplot is imported,
so plotting works on a cluster node or in CI with no display, and every figure
is closed after saving so a sweep that plots thousands of runs does not leak.

Long traces have millions of state changes; the over-time plots show
time-weighted means per bin (:func:`htcsim.metrics.resample_time_series`),
with the bin chosen from the trace's span so a plot has at most a few hundred
points, and the bin named in the axis label.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after the backend choice
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from htcsim.metrics import format_duration, resample_time_series
from htcsim.schedule import time_series

if TYPE_CHECKING:
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

WAIT_TICKS_S: tuple[tuple[int, str], ...] = (
    (1, "1 s"),
    (10, "10 s"),
    (60, "1 min"),
    (600, "10 min"),
    (3_600, "1 h"),
    (10 * 3_600, "10 h"),
    (SECONDS_PER_DAY, "1 d"),
    (7 * SECONDS_PER_DAY, "1 wk"),
    (30 * SECONDS_PER_DAY, "30 d"),
    (365 * SECONDS_PER_DAY, "1 yr"),
)

ECDF_MAX_POINTS = 4_000
"""A million-job ECDF drawn from this many order statistics is visually exact."""

DPI = 120


def wait_ticks(high: float) -> tuple[list[int], list[str]]:
    """Tick positions and labels (1 s, 1 min, 1 h, ...) for a log wait axis up to ``high``."""
    ticks = [(t, label) for t, label in WAIT_TICKS_S if t <= high]
    return [t for t, _ in ticks], [label for _, label in ticks]


def choose_bin(span_s: float) -> tuple[int, str]:
    """The smallest calendar bin that keeps a span of ``span_s`` within ``MAX_BINS`` bins."""
    for bin_s, name in BIN_CHOICES_S:
        if span_s / bin_s <= MAX_BINS:
            return bin_s, name
    return BIN_CHOICES_S[-1]


def _title(result: SimResult, what: str) -> str:
    return f"{what}: {result.workload.name} under {result.policy.label}"


def _save(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` as PNG and always close it (no figure outlives its function)."""
    out = Path(path)
    try:
        fig.tight_layout()
        fig.savefig(out, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return out


# --------------------------------------------------------------------------- waits


def plot_wait_distribution(result: SimResult, path: Path | str) -> Path:
    """Empirical CDF of waits on a log time axis, with the mean and 95th percentile marked.

    Waits span seconds to weeks and are heavy-tailed, so a linear histogram
    shows one bar at zero; an ECDF on a log axis shows the whole range, reads
    directly as "x % of jobs waited at most t", and compares policies on one
    figure without binning choices. Zero waits cannot sit on a log axis: waits
    under 1 s are drawn at 1 s and their share is stated on the plot.
    """
    start = result.first_start_s  # (a run a node failure cut short is not a wait)
    started = start >= 0
    wait = np.sort((start - result.workload.jobs["submit_s"])[started]).astype(np.float64)
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    ax.set_title(_title(result, "Wait distribution"))
    if wait.size == 0:
        ax.text(0.5, 0.5, "no job started", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    _draw_ecdf(ax, wait)
    _mark(ax, float(wait.mean()), "mean", "tab:red", "--")
    _mark(ax, float(np.percentile(wait, 95)), "95th percentile", "tab:purple", ":")
    not_started = int(np.count_nonzero(~started))
    note = f"{np.mean(wait < 1):.1%} of started jobs waited < 1 s (drawn at 1 s)"
    if not_started:
        note += f"\n{not_started} job(s) never started (not shown)"
    ax.text(0.98, 0.04, note, ha="right", va="bottom", transform=ax.transAxes, fontsize=8)
    ax.set_xscale("log")
    high = max(float(wait[-1]) * 1.5, 10.0)
    ax.set_xlim(1.0, high)
    ax.set_xticks(*wait_ticks(high))
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("wait: start - submit (log scale)")
    ax.set_ylabel("fraction of started jobs with wait <= x")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _draw_ecdf(ax: Axes, sorted_wait: np.ndarray) -> None:
    n = sorted_wait.size
    idx = np.unique(np.linspace(0, n - 1, min(n, ECDF_MAX_POINTS)).astype(np.int64))
    x = np.maximum(sorted_wait[idx], 1.0)
    y = (idx + 1) / n
    ax.step(x, y, where="post", color="tab:blue", label=f"ECDF ({n:,} jobs)")


def _mark(ax: Axes, value_s: float, name: str, color: str, style: str) -> None:
    ax.axvline(
        max(value_s, 1.0), color=color, linestyle=style, label=f"{name}: {format_duration(value_s)}"
    )


# --------------------------------------------------------------------------- over time


def _binned(
    result: SimResult, series: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(raw step series, its bin means, the bin's name)."""
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


def plot_utilization(
    result: SimResult, path: Path | str, *, series: pl.DataFrame | None = None
) -> Path:
    """Mean utilization per bin over the trace, with the run's overall utilization.

    ``series`` is a precomputed :func:`htcsim.metrics.time_series` (computed
    from ``result`` when omitted). The x axis is days from the workload's origin.
    """
    raw, binned, bin_name = _binned(result, series)
    fig, ax = plt.subplots(figsize=(9.0, 4.0))
    ax.set_title(_title(result, "Utilization"))
    if binned.height:
        days, util = _steps(raw, binned, "utilization")
        ax.step(days, util, where="post", color="tab:blue", label=f"{bin_name} mean")
        overall = _overall_mean(raw, "utilization")
        ax.axhline(overall, color="tab:red", linestyle="--", label=f"overall: {overall:.1%}")
        ax.legend(loc="lower right", fontsize=8)
    # Above 1 only if the schedule overcommits the machine: show it rather than clip it.
    peak = binned["utilization"].max()
    ax.set_ylim(0.0, max(1.05, float(peak or 0.0) * 1.05))  # type: ignore[arg-type]
    ax.set_xlabel("time (days)")
    ax.set_ylabel(f"busy cores / total cores\n({bin_name} means)" if bin_name else "utilization")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _overall_mean(series: pl.DataFrame, column: str) -> float:
    """Time-weighted mean of a step column from the first to the last event.

    For a replay that ran to completion this is exactly ``summarize``'s
    utilization: the span is first submit to last end.
    """
    t = series["time_s"].to_numpy()
    if t.size < 2 or t[-1] == t[0]:
        return float(series[column][0])
    values = series[column].to_numpy()[:-1]
    return float(np.sum(values * np.diff(t)) / (t[-1] - t[0]))


def plot_queue_length(
    result: SimResult, path: Path | str, *, series: pl.DataFrame | None = None
) -> Path:
    """Mean number of queued and of running jobs per bin, over the trace (x in days)."""
    raw, binned, bin_name = _binned(result, series)
    fig, ax = plt.subplots(figsize=(9.0, 4.0))
    ax.set_title(_title(result, "Queue"))
    if binned.height:
        for column, label in (("queued_jobs", "queued jobs"), ("running_jobs", "running jobs")):
            ax.step(*_steps(raw, binned, column), where="post", label=label)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("time (days)")
    ax.set_ylabel(f"jobs ({bin_name} means)" if bin_name else "jobs")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
