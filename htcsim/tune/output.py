"""What a study leaves behind: the policy file, every trial, the comparison, the front.

Layout of ``out_dir``::

    best_policy.toml   the best policy: `htcsim simulate --policy` and the agent read it
    trials.parquet     every trial: part, parameters (p_<field>), metrics, loss, seconds,
                       same_as (the trial whose replay it reused), feasible, broken
    comparison.csv     the best policy and the baselines on the training and test parts,
                       with the constraints each meets or breaks on each part
    pareto.csv, pareto.png   (Pareto studies) the non-dominated feasible training trials
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from htcsim.policy import save_policy
from htcsim.tune.plot import plot_pareto
from htcsim.tune.study import TEST, TRAIN, StudyResult

SHOWN_METRICS = ("mean_bsld", "mean_wait_s", "p95_wait_s", "max_wait_s", "utilization", "fairness")
"""Metrics every comparison shows, besides the study's own."""


def shown_metrics(result: StudyResult) -> list[str]:
    """The study's objectives, the metrics its constraints bound, then SHOWN_METRICS."""
    bounded = [c.metric for c in result.constraints]
    return list(dict.fromkeys([*result.objective.names, *bounded, *SHOWN_METRICS]))


def constraint_cell(result: StudyResult, metrics: dict[str, float], part: str) -> str | None:
    """``met``, or ``broken: <constraint>; ...`` (None: the study has no constraint)."""
    if not result.constraints:
        return None
    if not metrics:
        return "-"
    broken = result.broken(metrics, part)
    return "met" if not broken else "broken: " + "; ".join(c.text for c in broken)


def comparison_table(result: StudyResult) -> pl.DataFrame:
    """One row per policy (the best, then the baselines): each metric on both
    parts, and whether it meets the constraints on each."""
    names = shown_metrics(result)
    rows: list[dict[str, Any]] = []
    runs = [("tuned", result.best_train, result.best_test)]
    runs += [(name, train, test) for name, (train, test) in result.baselines.items()]
    for label, train, test in runs:
        row: dict[str, Any] = {"policy": label}
        if result.constraints:
            row["train_constraints"] = constraint_cell(result, train, TRAIN)
            row["test_constraints"] = constraint_cell(result, test, TEST)
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
        train = row["part"] == TRAIN and row["metrics"] is not None
        violation = row.get("violation", math.nan)
        record: dict[str, Any] = {
            "number": row["number"],
            "part": row["part"],
            "loss": _number(row.get("loss")),
            "seconds": row["seconds"],
            "error": row["error"],
            "same_as": row.get("same_as"),
            "feasible": (violation == 0) if train else None,
            "broken": (
                "; ".join(c.text for c in result.broken(row["metrics"])) or None
                if train and result.constraints
                else None
            ),
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


def _number(value: Any) -> float | None:
    """Floats for the tables; None (null) for a missing or undefined figure."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
