"""PNG figures of one replay, for reports and for a quick look after ``htcsim simulate``.

Rendering is headless: figures are made on an Agg canvas without pyplot (no
display, no global figure registry to leak from, and a tenth of a second less
to import), so plotting works on a cluster node or in CI; the Agg backend is
also selected for the callers that use pyplot (``_save`` closes their figures).

What each figure shows (the ECDF points, the bin means, the labels) is
``htcsim.report.figures``; this module only draws it, and imports neither
polars nor the simulator, so that ``draw_figures`` can run in a process of
its own (``htcsim.report.results`` draws there while it writes the tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from htcsim.report.figures import (
    BIN_CHOICES_S,
    ECDF_MAX_POINTS,
    MAX_BINS,
    ResultFigures,
    StepFigure,
    WaitFigure,
    choose_bin,
    over_time_figures,
    wait_figure,
)

if TYPE_CHECKING:
    import polars as pl

    from htcsim.schedule import SimResult

__all__ = [
    "BIN_CHOICES_S",
    "DPI",
    "ECDF_MAX_POINTS",
    "MAX_BINS",
    "WAIT_TICKS_S",
    "choose_bin",
    "draw_figures",
    "plot_queue_length",
    "plot_utilization",
    "plot_wait_distribution",
    "wait_ticks",
]

SECONDS_PER_DAY = 86_400

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

DPI = 120


def wait_ticks(high: float) -> tuple[list[int], list[str]]:
    """Tick positions and labels (1 s, 1 min, 1 h, ...) for a log wait axis up to ``high``."""
    ticks = [(t, label) for t, label in WAIT_TICKS_S if t <= high]
    return [t for t, _ in ticks], [label for _, label in ticks]


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of one axes on an Agg canvas, outside pyplot."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` as PNG; a pyplot figure is always closed (none outlives its function)."""
    out = Path(path)
    try:
        fig.tight_layout()
        fig.savefig(out, format="png", dpi=DPI)
    finally:
        if fig.canvas.manager is not None:  # made by pyplot
            import matplotlib.pyplot as plt

            plt.close(fig)
    return out


# --------------------------------------------------------------------------- drawing


def draw_figures(figures: ResultFigures, out: Path) -> dict[str, Path]:
    """wait.png, utilization.png and queue.png in ``out``; file name -> path."""
    return {
        "wait.png": draw_wait(figures.wait, out / "wait.png"),
        "utilization.png": draw_utilization(figures.utilization, out / "utilization.png"),
        "queue.png": draw_queue(figures.queue, out / "queue.png"),
    }


def draw_wait(figure: WaitFigure, path: Path | str) -> Path:
    """Empirical CDF of waits on a log time axis, with the mean and 95th percentile marked.

    Waits span seconds to weeks and are heavy-tailed, so a linear histogram
    shows one bar at zero; an ECDF on a log axis shows the whole range, reads
    directly as "x % of jobs waited at most t", and compares policies on one
    figure without binning choices.
    """
    fig, ax = _figure(7.0, 4.5)
    ax.set_title(figure.title)
    if figure.n_started == 0:
        ax.text(0.5, 0.5, "no job started", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    label = f"ECDF ({figure.n_started:,} jobs)"
    ax.step(figure.x, figure.y, where="post", color="tab:blue", label=label)
    for mark in figure.marks:
        ax.axvline(max(mark.value_s, 1.0), color=mark.color, linestyle=mark.style, label=mark.label)
    ax.text(0.98, 0.04, figure.note, ha="right", va="bottom", transform=ax.transAxes, fontsize=8)
    ax.set_xscale("log")
    high = max(figure.longest_s * 1.5, 10.0)
    ax.set_xlim(1.0, high)
    ax.set_xticks(*wait_ticks(high))
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("wait: start - submit (log scale)")
    ax.set_ylabel("fraction of started jobs with wait <= x")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def draw_utilization(figure: StepFigure, path: Path | str) -> Path:
    """Mean utilization per bin over the trace (x in days), with the run's overall one."""
    fig, ax = _figure(9.0, 4.0)
    ax.set_title(figure.title)
    for label, values in figure.lines:
        ax.step(figure.days, values, where="post", color="tab:blue", label=label)
    if figure.lines and figure.overall is not None:
        overall = figure.overall
        ax.axhline(overall, color="tab:red", linestyle="--", label=f"overall: {overall:.1%}")
        ax.legend(loc="lower right", fontsize=8)
    # Above 1 only if the schedule overcommits the machine: show it rather than clip it.
    ax.set_ylim(0.0, max(1.05, (figure.peak or 0.0) * 1.05))
    ax.set_xlabel("time (days)")
    bin_name = figure.bin_name
    ax.set_ylabel(f"busy cores / total cores\n({bin_name} means)" if bin_name else "utilization")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def draw_queue(figure: StepFigure, path: Path | str) -> Path:
    """Mean number of queued and of running jobs per bin, over the trace (x in days)."""
    fig, ax = _figure(9.0, 4.0)
    ax.set_title(figure.title)
    for label, values in figure.lines:
        ax.step(figure.days, values, where="post", label=label)
    if figure.lines:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("time (days)")
    bin_name = figure.bin_name
    ax.set_ylabel(f"jobs ({bin_name} means)" if bin_name else "jobs")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- from a result


def plot_wait_distribution(result: SimResult, path: Path | str) -> Path:
    """The wait ECDF of ``result`` (``draw_wait``)."""
    return draw_wait(wait_figure(result), path)


def plot_utilization(
    result: SimResult, path: Path | str, *, series: pl.DataFrame | None = None
) -> Path:
    """Mean utilization per bin over the trace (``draw_utilization``). ``series``
    is a precomputed :func:`htcsim.schedule.time_series` (computed from
    ``result`` when omitted)."""
    return draw_utilization(over_time_figures(result, series)[0], path)


def plot_queue_length(
    result: SimResult, path: Path | str, *, series: pl.DataFrame | None = None
) -> Path:
    """Mean queued and running jobs per bin over the trace (``draw_queue``)."""
    return draw_queue(over_time_figures(result, series)[1], path)
