"""What a study leaves behind: the policy file, every trial, the comparison, the front.

Layout of ``out_dir``::

    best_policy.toml   the best policy: `htcsim simulate --policy` and the agent read it
    trials.parquet     every trial: part, parameters (p_<field>), metrics, loss, seconds
    comparison.csv     the best policy and the baselines on the training and test parts
    pareto.csv, pareto.png   (Pareto studies) the non-dominated training trials
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from htcsim.policy import save_policy
from htcsim.tune.study import StudyResult

SHOWN_METRICS = ("mean_bsld", "mean_wait_s", "p95_wait_s", "max_wait_s", "utilization", "fairness")
"""Metrics every comparison shows, besides the study's own."""


def comparison_table(result: StudyResult) -> pl.DataFrame:
    """One row per policy (the best, then the baselines): each metric on both parts."""
    names = list(dict.fromkeys([*result.objective.names, *SHOWN_METRICS]))
    rows: list[dict[str, Any]] = []
    runs = [("tuned", result.best_train, result.best_test)]
    runs += [(name, train, test) for name, (train, test) in result.baselines.items()]
    for label, train, test in runs:
        row: dict[str, Any] = {"policy": label}
        for name in names:
            row[f"train_{name}"] = _number(train.get(name))
            row[f"test_{name}"] = _number(test.get(name))
        for trace, by_policy in result.others.items():
            for name in names:
                row[f"{trace}_{name}"] = _number(by_policy.get(label, {}).get(name))
        rows.append(row)
    return pl.DataFrame(rows)


def trials_table(result: StudyResult) -> pl.DataFrame:
    """Every trial, flattened: parameters as p_<field>, metrics as columns."""
    metric_names = sorted({k for row in result.trials if row["metrics"] for k in row["metrics"]})
    records = []
    for row in result.trials:
        record: dict[str, Any] = {
            "number": row["number"],
            "part": row["part"],
            "loss": _number(row.get("loss")),
            "seconds": row["seconds"],
            "error": row["error"],
        }
        for name, value in row["params"].items():
            record[f"p_{name}"] = str(value) if isinstance(value, str | bool) else value
        metrics = row["metrics"] or {}
        for name in metric_names:
            record[name] = _number(metrics.get(name))
        records.append(record)
    return pl.DataFrame(records, infer_schema_length=None)


def write_study(result: StudyResult, out_dir: Path | str) -> dict[str, Path]:
    """Write the study's files (see the module docstring); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "best_policy.toml": out / "best_policy.toml",
        "trials.parquet": out / "trials.parquet",
        "comparison.csv": out / "comparison.csv",
    }
    save_policy(result.best_policy, paths["best_policy.toml"])
    trials_table(result).write_parquet(paths["trials.parquet"])
    comparison_table(result).write_csv(paths["comparison.csv"])
    if result.objective.pareto:
        paths["pareto.csv"] = out / "pareto.csv"
        paths["pareto.png"] = out / "pareto.png"
        front = trials_table(
            StudyResult(**{**result.__dict__, "trials": result.pareto})  # type: ignore[arg-type]
        )
        front.write_csv(paths["pareto.csv"])
        plot_pareto(result, paths["pareto.png"])
    return paths


def plot_pareto(result: StudyResult, path: Path) -> Path:
    """The first two objectives of every training trial, the front highlighted."""
    from matplotlib.figure import Figure

    from htcsim.report.plots import _save

    x_name, y_name = result.objective.names[:2]

    def coords(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        pts = [
            (r["metrics"][x_name], r["metrics"][y_name])
            for r in rows
            if r["part"] == "train"
            and r["metrics"]
            and math.isfinite(r["metrics"].get(x_name, math.nan))
            and math.isfinite(r["metrics"].get(y_name, math.nan))
        ]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    xs, ys = coords(result.trials)
    ax.scatter(xs, ys, s=12, color="0.7", label="trials")
    fx, fy = coords(sorted(result.pareto, key=lambda r: r["metrics"][x_name]))
    ax.plot(fx, fy, "o-", color="C3", label="Pareto front")
    # the view is the trials'; a baseline far outside it is named, not drawn
    if xs:
        pad_x = (max(xs) - min(xs)) * 0.15 or abs(max(xs)) * 0.05 or 1.0
        pad_y = (max(ys) - min(ys)) * 0.15 or abs(max(ys)) * 0.05 or 1.0
        ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
        ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    for name, (train, _) in result.baselines.items():
        x, y = train.get(x_name, math.nan), train.get(y_name, math.nan)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if x_low <= x <= x_high and y_low <= y <= y_high:
            ax.scatter([x], [y], marker="s", s=40, label=name)
        else:
            ax.scatter([], [], marker="s", s=40, label=f"{name}: {x:.4g}, {y:.4g} (off the view)")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title("Training part: every trial and the Pareto front")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _number(value: Any) -> float | None:
    """Floats for the tables; None (null) for a missing or undefined figure."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
