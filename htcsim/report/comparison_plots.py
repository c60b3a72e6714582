"""Figures that overlay several runs on shared axes, for the HTML report (``htcsim.report.html``).

:mod:`htcsim.report.plots` draws one replay from its ``SimResult``; these compare runs
read back from result directories, so they work from what a directory holds:
the sorted waits of ``jobs.parquet`` and the step series of
``timeseries.parquet``. Each run keeps one colour (its position) in every
figure. All over-time curves of a figure share one bin, chosen from the longest
run (:func:`htcsim.report.plots.choose_bin`), so runs are smoothed alike; a step level
(utilization, queued jobs, nodes by state) shows time-weighted bin means
(:func:`htcsim.metrics.resample_time_series`), a cumulative one (cost,
node-hours) its value at each bin edge.

Figures are bare :class:`matplotlib.figure.Figure` objects, never registered
with pyplot, so there is no global state and nothing to close.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from htcsim.metrics import format_duration, resample_time_series
from htcsim.report.plots import DPI, ECDF_MAX_POINTS, choose_bin, wait_ticks

SECONDS_PER_DAY = 86_400

NODE_STATES: tuple[tuple[str, str, str], ...] = (
    ("nodes_allocated", "allocated", "tab:green"),
    ("nodes_idle", "idle", "tab:blue"),
    ("nodes_booting", "booting", "tab:orange"),
    ("nodes_draining", "draining", "tab:purple"),
    ("nodes_down", "down", "tab:red"),
    ("nodes_off", "off", "tab:gray"),
)
"""Optional node-state columns (column, legend, colour), stacked bottom to top."""

PROVISIONED_COLUMN = "nodes_up"
"""Optional: nodes not powered off, drawn as a line over the stacked states."""

CUMULATIVE: tuple[tuple[str, str, str], ...] = (
    ("cost", "cost", "{:,.2f}"),
    ("node_hours", "node-hours", "{:,.1f}"),
)
"""Optional cumulative columns (column, name, total's format): a panel each when recorded."""


@dataclass(frozen=True)
class RunSeries:
    """What the figures need of one run."""

    label: str
    waits_s: np.ndarray  # float64, sorted waits of the jobs that started
    n_not_started: int
    series: pl.DataFrame  # time_s ascending; utilization, queued_jobs, optional node/cost columns


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI, to embed in a page with no files."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def comparison_figures(runs: Sequence[RunSeries]) -> list[tuple[str, Figure]]:
    """(caption, figure) for every figure the runs' data supports, in page order.

    Always the wait ECDF, utilization and queue length; nodes by state and the
    cumulative figure only when some run recorded those columns.
    """
    shown = [
        ("Wait-time ECDF: share of started jobs that waited at most x.", wait_figure(runs)),
        (
            "Utilization: busy cores / total cores over time.",
            level_figure(runs, "utilization", "Utilization", "busy / total cores"),
        ),
        (
            "Queue length: jobs waiting over time.",
            level_figure(runs, "queued_jobs", "Queue length", "queued jobs"),
        ),
        ("Nodes by state over time, one panel per run.", nodes_figure(runs)),
        ("Cumulative cost and provisioned node-hours over time.", cumulative_figure(runs)),
    ]
    return [(caption, fig) for caption, fig in shown if fig is not None]


def wait_figure(runs: Sequence[RunSeries]) -> Figure:
    """Wait ECDFs on a log axis: waits span seconds to weeks (zero waits drawn at 1 s)."""
    fig = Figure(figsize=(9.0, 4.5))
    ax = fig.subplots()
    high = 10.0
    for i, run in enumerate(runs):
        waits = run.waits_s
        if waits.size == 0:
            continue
        # A million-job ECDF drawn from a few thousand order statistics is visually exact.
        idx = np.unique(np.linspace(0, waits.size - 1, min(waits.size, ECDF_MAX_POINTS)))
        idx = idx.astype(np.int64)
        label = f"{run.label}: mean {format_duration(float(waits.mean()))}"
        if run.n_not_started:
            label += f", {run.n_not_started:,} never started"
        x, y = np.maximum(waits[idx], 1.0), (idx + 1) / waits.size
        ax.step(x, y, where="post", color=_color(i), label=label)
        high = max(high, float(waits[-1]) * 1.5)
    ax.set_xscale("log")
    ax.set_xlim(1.0, high)
    ax.set_xticks(*wait_ticks(high))
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("wait: start - submit (log scale; waits under 1 s drawn at 1 s)")
    ax.set_ylabel("fraction of started jobs\nwith wait <= x")
    _finish(ax, "Wait distribution")
    return fig


def level_figure(runs: Sequence[RunSeries], column: str, title: str, ylabel: str) -> Figure:
    """One step curve per run of a level column, as bin means (x in days)."""
    bin_s, bin_name = _common_bin(runs)
    fig = Figure(figsize=(9.0, 4.0))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        if run.series.height:
            days, values = _bin_means(run.series, (column,), bin_s)
            ax.step(days, values[column], where="post", color=_color(i), label=run.label)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("time (days)")
    ax.set_ylabel(f"{ylabel}\n({bin_name} means)")
    _finish(ax, title)
    return fig


def nodes_figure(runs: Sequence[RunSeries]) -> Figure | None:
    """Nodes by state, stacked, one panel per run that recorded them; None if none did."""
    with_nodes = [r for r in runs if r.series.height and _node_states(r.series)]
    if not with_nodes:
        return None
    bin_s, bin_name = _common_bin(with_nodes)
    fig = Figure(figsize=(9.0, 1.0 + 2.6 * len(with_nodes)))
    axes = fig.subplots(len(with_nodes), 1, sharex=True, squeeze=False)[:, 0]
    for ax, run in zip(axes, with_nodes, strict=True):
        states = _node_states(run.series)
        columns = [c for c, _, _ in states]
        up = [PROVISIONED_COLUMN] if PROVISIONED_COLUMN in run.series.columns else []
        days, values = _bin_means(run.series, [*columns, *up], bin_s)
        ax.stackplot(
            days,
            *(values[c] for c in columns),
            labels=[name for _, name, _ in states],
            colors=[color for _, _, color in states],
            step="post",
            alpha=0.8,
        )
        for column in up:
            ax.step(days, values[column], where="post", color="black", label="provisioned")
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel(f"nodes\n({bin_name} means)")
        _finish(ax, run.label)
    axes[-1].set_xlabel("time (days)")
    return fig


def _node_states(series: pl.DataFrame) -> list[tuple[str, str, str]]:
    """The states a run recorded and ever entered: a layer that stays 0 is legend clutter."""
    return [
        state
        for state in NODE_STATES
        if state[0] in series.columns and bool((series[state[0]].fill_null(0) != 0).any())
    ]


def cumulative_figure(runs: Sequence[RunSeries]) -> Figure | None:
    """Cumulative cost and node-hours, a panel each that some run recorded; None if none did.

    A cost that stays 0 in every run (no node type has a price) gets no panel:
    a flat line at zero says nothing.
    """
    panels = [
        (column, name, total_format)
        for column, name, total_format in CUMULATIVE
        if any(_recorded(r.series, column, nonzero=column == "cost") for r in runs)
    ]
    if not panels:
        return None
    bin_s, _ = _common_bin(runs)
    fig = Figure(figsize=(9.0, 1.0 + 3.0 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (column, name, total_format) in zip(axes, panels, strict=True):
        for i, run in enumerate(runs):
            if _recorded(run.series, column):
                days, values = _bin_edges(run.series, column, bin_s)
                total = total_format.format(values[-1])
                ax.plot(days, values, color=_color(i), label=f"{run.label}: {total}")
        ax.set_ylim(bottom=0.0)
        ax.set_ylabel(f"{name}\n(cumulative)")
        _finish(ax, f"{name.capitalize()} over time")
    axes[-1].set_xlabel("time (days)")
    return fig


def _recorded(series: pl.DataFrame, column: str, *, nonzero: bool = False) -> bool:
    if column not in series.columns or series.height == 0:
        return False
    return not nonzero or bool((series[column].fill_null(0) != 0).any())


# --------------------------------------------------------------------------- binning


def _common_bin(runs: Sequence[RunSeries]) -> tuple[int, str]:
    """One bin for all runs of a figure, from the longest span, so curves are smoothed alike."""
    spans = [float(r.series["time_s"][-1] - r.series["time_s"][0]) for r in runs if r.series.height]
    return choose_bin(max(spans, default=0.0))


def _bin_means(
    series: pl.DataFrame, columns: Sequence[str], bin_s: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bin means of step columns as post-step points in days, closed at the last event.

    The last bin's mean is repeated at the last event so that its step shows.
    """
    raw = series.select("time_s", *columns)
    means = resample_time_series(raw, bin_s)
    days = np.append(means["time_s"].to_numpy(), raw["time_s"][-1]) / SECONDS_PER_DAY
    return days, {c: np.append(means[c].to_numpy(), means[c][-1]) for c in columns}


def _bin_edges(series: pl.DataFrame, column: str, bin_s: int) -> tuple[np.ndarray, np.ndarray]:
    """A cumulative column at every bin edge and at the last event (x in days).

    Cumulative figures accrue linearly between events, so linear interpolation
    is exact at the edges and the curve ends at the run's total. The edges are
    those of :func:`htcsim.metrics.resample_time_series`.
    """
    t = series["time_s"].to_numpy().astype(np.float64)
    v = series[column].fill_null(strategy="forward").fill_null(0.0).to_numpy()
    first_edge = (t[0] // bin_s) * bin_s
    edges = np.append(np.arange(first_edge, t[-1], bin_s, dtype=np.float64), t[-1])
    return edges / SECONDS_PER_DAY, np.interp(edges, t, v.astype(np.float64))


def _color(i: int) -> str:
    """Run ``i``'s colour in every figure (matplotlib's default cycle)."""
    return f"C{i % 10}"


def _finish(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
