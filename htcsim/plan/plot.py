"""The capacity plan as a figure: p95 wait against fleet size, one curve per growth factor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from htcsim.plan.fleet import PlanResult


def plot_plan(plan: PlanResult, path: Path | str) -> Path:
    """p95 wait (solid) and mean wait (dashed) against fleet size, one colour per
    growth factor, the target as a horizontal line and each answer starred.

    Waits near the smallest fleets are often days while the answer sits at
    minutes, so the y axis turns logarithmic when the finite waits span more
    than two decades (waits under 1 s drawn at 1 s, as the wait ECDF does); the
    x axis turns logarithmic when the doubling search spread the sizes over
    more than a factor of 8. A size where some job never started has no wait
    and is not drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    from htcsim.metrics import format_duration
    from htcsim.report.plots import _save, wait_ticks

    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    kind = "autoscaler max nodes" if plan.autoscale else "fleet size"
    ax.set_title(
        f"{kind.capitalize()} for a p95 wait <= {format_duration(plan.target_p95_s)}: "
        f"{plan.workload}",
        fontsize=10,
    )
    waits = np.concatenate(
        [p.points[c].to_numpy() for p in plan.plans for c in ("p95_wait_s", "mean_wait_s")]
        + [np.array([plan.target_p95_s])]
    )
    waits = waits[np.isfinite(waits)]
    log_y = waits.size > 0 and waits.max() / max(waits.min(), 1.0) > 100
    floor = 1.0 if log_y else 0.0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles: list[Line2D] = []
    for k, growth_plan in enumerate(plan.plans):
        color = colors[k % len(colors)]
        sizes = growth_plan.points["size"].to_numpy()
        p95 = np.maximum(growth_plan.points["p95_wait_s"].to_numpy(), floor)
        mean = np.maximum(growth_plan.points["mean_wait_s"].to_numpy(), floor)
        p95[~np.isfinite(p95)] = np.nan
        if growth_plan.smallest is None:
            answer = f"not met up to {growth_plan.searched_up_to} nodes"
        else:
            answer = f"{growth_plan.smallest} nodes"
            at = int(np.flatnonzero(sizes == growth_plan.smallest)[0])
            ax.plot(
                [growth_plan.smallest],
                [p95[at]],
                marker="*",
                markersize=15,
                color=color,
                markeredgecolor="black",
                linestyle="none",
                zorder=3,
            )
        (line,) = ax.plot(
            sizes,
            p95,
            marker="o",
            markersize=3,
            color=color,
            label=f"growth x{growth_plan.growth:g}: {answer}",
        )
        ax.plot(sizes, mean, linestyle="--", color=color, alpha=0.6)
        handles.append(line)
    ax.axhline(max(plan.target_p95_s, floor), color="black", linestyle=":")
    handles.append(
        Line2D(
            [],
            [],
            color="black",
            linestyle=":",
            label=f"target p95: {format_duration(plan.target_p95_s)}",
        )
    )
    handles.append(Line2D([], [], color="gray", linestyle="--", label="mean wait"))
    all_sizes = np.concatenate([p.points["size"].to_numpy() for p in plan.plans])
    if all_sizes.max() / all_sizes.min() > 8:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_y:
        ax.set_yscale("log")
        high = float(waits.max()) * 1.5
        ax.set_yticks(*wait_ticks(high))
        ax.set_ylim(bottom=0.7)  # the points drawn at 1 s stay visible
        ax.text(
            0.98,
            0.02,
            "waits < 1 s drawn at 1 s",
            ha="right",
            va="bottom",
            transform=ax.transAxes,
            fontsize=7,
        )
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_duration(v)))
        top = float(waits.max()) if waits.size else 1.0
        ax.set_ylim(0.0, max(top, 1.0) * 1.25)  # headroom for the legend
    node = plan.node
    ax.set_xlabel(f"{kind} (nodes of {node.cores} core{'s' if node.cores != 1 else ''})")
    ax.set_ylabel("wait: p95 (solid), mean (dashed)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    return _save(fig, path)
