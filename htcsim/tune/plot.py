"""The Pareto plot of a study: every training trial, the front, the baselines, the choice.

The baselines often lie far from the trials (FCFS without backfilling waits
days where the tuned policies wait hours), so both axes are logarithmic when
every figure on them is positive, and the view holds every point: no
baseline is left out of the picture. Durations are drawn in hours. Trials
that break a constraint are crossed, a constraint on a plotted metric is a
dotted line at its bound, and the chosen policy is starred.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from htcsim.tune.study import TRAIN, StudyResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_BASELINE_MARKERS = ("s", "D", "^", "v", "P")


def plot_pareto(result: StudyResult, path: Path | str) -> Path:
    """Write ``pareto_figure`` as PNG."""
    from htcsim.report.plots import _save

    return _save(pareto_figure(result), path)


def pareto_figure(result: StudyResult) -> Figure:
    """The first two objectives of every training trial, the front highlighted,
    every baseline drawn and labelled with its figures, the chosen policy starred."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    x_name, y_name = result.objective.names[:2]
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    seen_x: list[float] = []
    seen_y: list[float] = []

    def point(metrics: dict[str, float] | None) -> tuple[float, float] | None:
        if not metrics:
            return None
        x, y = _shown(x_name, metrics.get(x_name)), _shown(y_name, metrics.get(y_name))
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        seen_x.append(x)
        seen_y.append(y)
        return x, y

    def scatter(rows: list[dict[str, Any]], **style: Any) -> None:
        pts = [p for p in (point(r["metrics"]) for r in rows) if p is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], **style)

    train = [r for r in result.trials if r["part"] == TRAIN and r["metrics"]]
    feasible = [r for r in train if r.get("violation", 0.0) == 0]
    infeasible = [r for r in train if r.get("violation", 0.0) != 0]
    scatter(feasible, s=12, color="0.65", label="trials", zorder=1)
    if infeasible:
        scatter(
            infeasible,
            s=14,
            marker="x",
            color="#d9a0a0",
            label="trials that break a constraint",
            zorder=1,
        )
    front = [p for p in (point(r["metrics"]) for r in result.pareto) if p is not None]
    front.sort()
    if front:
        ax.plot(
            [p[0] for p in front],
            [p[1] for p in front],
            "o-",
            color="C3",
            markersize=4,
            label="Pareto front",
            zorder=2,
        )
    chosen = point(result.best_train)
    if chosen is not None:
        ax.scatter(
            [chosen[0]],
            [chosen[1]],
            marker="*",
            s=420,
            color="gold",
            edgecolor="black",
            label=f"chosen: {_label(x_name, chosen[0])}, {_label(y_name, chosen[1])}",
            zorder=3,
        )
    # hollow and of growing sizes, so that baselines on one point (or on the
    # chosen policy) stay visible around each other
    for k, (name, (metrics, _)) in enumerate(result.baselines.items()):
        at = point(metrics)
        if at is None:
            continue
        ax.scatter(
            [at[0]],
            [at[1]],
            marker=_BASELINE_MARKERS[k % len(_BASELINE_MARKERS)],
            s=45 + 55 * k,
            facecolor="none",
            edgecolor=f"C{k}",
            linewidth=1.6,
            label=f"{name}: {_label(x_name, at[0])}, {_label(y_name, at[1])}",
            zorder=4,
        )
    baseline = result.baselines[result.baseline][0] if result.baseline in result.baselines else {}
    for c in result.constraints:
        if c.metric in (x_name, y_name):
            bound = _shown(c.metric, c.bound(baseline))
            if math.isfinite(bound) and bound > 0:
                line = ax.axvline if c.metric == x_name else ax.axhline
                line(
                    bound,
                    color="0.3",
                    linestyle=":",
                    linewidth=1.2,
                    label=f"{c.text} ({_label(c.metric, bound)})",
                    zorder=1,
                )
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for values, axis, set_scale in (
        (seen_x, ax.xaxis, ax.set_xscale),
        (seen_y, ax.yaxis, ax.set_yscale),
    ):
        if values and min(values) > 0:
            set_scale("log")
            axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel(_axis_label(x_name, seen_x))
    ax.set_ylabel(_axis_label(y_name, seen_y))
    ax.set_title("Training part: every trial, the Pareto front, the baselines", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _shown(name: str, value: float | None) -> float:
    """A metric as drawn: durations in hours."""
    if value is None:
        return math.nan
    value = float(value)
    return value / 3600.0 if name.endswith("_s") else value


def _label(name: str, value: float) -> str:
    return f"{value:.3g} h" if name.endswith("_s") else f"{value:.3g}"


def _axis_label(name: str, values: list[float]) -> str:
    label = f"{name.removesuffix('_s')} (hours)" if name.endswith("_s") else name
    if values and min(values) > 0:
        label += ", log scale"
    return label
