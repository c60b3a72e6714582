"""What a study optimizes: metrics of a replay, each with the direction that is better.

Every metric of ``htcsim.metrics.summarize`` can be named, plus ``fairness``:
Jain's index over users of their mean bounded slowdown,
``(sum x)^2 / (n * sum x^2)``, 1 when every user is treated alike and 1/n at
worst; and ``p99_wait_s``, the 99th percentile of the started jobs' waits (as
``p95_wait_s``: linear interpolation), which sees the jobs a policy leaves
behind where the mean and the p95 do not.

An objective is a list of (metric, weight). With one metric the study
minimizes it (or its negative, for a metric where more is better); with
several, a weighted sum of each metric relative to its value under the
reference baseline, so that hours of wait and node-hours can be added; a
Pareto study keeps them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from htcsim.metrics import Summary, bounded_slowdown, summarize
from htcsim.schedule import SimResult

LOWER_IS_BETTER = frozenset(
    {
        "mean_wait_s",
        "median_wait_s",
        "p95_wait_s",
        "p99_wait_s",
        "max_wait_s",
        "mean_bsld",
        "median_bsld",
        "mean_response_s",
        "makespan_s",
        "node_hours",
        "cost",
        "mean_nodes_provisioned",
        "lost_core_h",
        "n_requeued",
        "n_node_failed",
        "n_killed_at_walltime",
    }
)
HIGHER_IS_BETTER = frozenset(
    {"utilization", "provisioned_utilization", "throughput_jobs_per_h", "fairness"}
)
METRICS = LOWER_IS_BETTER | HIGHER_IS_BETTER


class ObjectiveError(ValueError):
    """An objective names an unknown metric or a bad weight."""


@dataclass(frozen=True)
class Objective:
    """(metric, weight) pairs; ``pareto`` keeps the metrics apart (no weights)."""

    terms: tuple[tuple[str, float], ...]
    pareto: bool = False

    def __post_init__(self) -> None:
        if not self.terms:
            raise ObjectiveError("an objective needs at least one metric")
        for name, weight in self.terms:
            if name not in METRICS:
                known = ", ".join(sorted(METRICS))
                raise ObjectiveError(f"unknown metric {name!r} (known: {known})")
            if not (math.isfinite(weight) and weight > 0):
                raise ObjectiveError(f"{name}: weight must be a number > 0, got {weight}")
        if self.pareto and len(self.terms) < 2:
            raise ObjectiveError("a Pareto study needs at least two metrics")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.terms)

    def losses(self, metrics: dict[str, float]) -> np.ndarray:
        """One value per metric, lower is better (a maximized metric is negated;
        an undefined one is +inf: a trial that measures nothing never wins)."""
        out = []
        for name in self.names:
            value = float(metrics.get(name, math.nan))
            if not math.isfinite(value):
                out.append(math.inf)
            else:
                out.append(-value if name in HIGHER_IS_BETTER else value)
        return np.array(out, dtype=np.float64)

    def scalar(self, metrics: dict[str, float], reference: dict[str, float]) -> float:
        """The single value a one-objective study minimizes: the metric itself
        (sign-adjusted) alone, else the weighted sum relative to ``reference``."""
        losses = self.losses(metrics)
        if len(self.terms) == 1:
            return float(losses[0])
        ref = np.abs(self.losses(reference))
        scale = np.where(np.isfinite(ref) & (ref > 0), ref, 1.0)
        weights = np.array([w for _, w in self.terms])
        return float(np.sum(weights * losses / scale))


def parse_objective(specs: list[str], pareto: bool = False) -> Objective:
    """``["mean_bsld", "node_hours:0.5"]``: metric[:weight], weight 1 by default."""
    terms = []
    for spec in specs:
        name, _, weight = spec.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError as exc:
            raise ObjectiveError(f"{spec!r}: the weight after ':' must be a number") from exc
        terms.append((name.strip(), value))
    return Objective(tuple(terms), pareto)


def trial_metrics(result: SimResult) -> dict[str, float]:
    """The summary of a replay plus fairness, as plain floats (the same policy
    and workload give the same metrics on any machine)."""
    summary: Summary = summarize(result)
    # the replay's wall-clock speed is a property of the machine, not of the policy
    metrics = {
        key: float(value)
        for key, value in summary.items()
        if key not in ("replay_s", "jobs_per_second")
    }
    metrics["fairness"] = jain_index(user_mean_bsld(result))
    metrics["p99_wait_s"] = wait_percentile(result, 99.0)
    if int(summary["n_started"]) < int(summary["n_jobs"]) - int(summary["n_cancelled"]):
        # jobs that never ran have no wait: the figures would flatter the policy
        for name in LOWER_IS_BETTER & set(metrics):
            if name.endswith(("_wait_s", "_bsld", "_response_s")):
                metrics[name] = math.inf
    return metrics


def wait_percentile(result: SimResult, q: float) -> float:
    """The ``q``-th percentile of the started jobs' waits (nan when none started)."""
    started = result.start_s >= 0
    if not started.any():
        return math.nan
    wait = (result.start_s - result.workload.jobs["submit_s"])[started]
    return float(np.percentile(wait, q))


def user_mean_bsld(result: SimResult) -> np.ndarray:
    """Mean bounded slowdown of each user's finished jobs (users with none left
    out): the same figures as ``metrics.per_user``, in NumPy, at a trial's speed."""
    jobs = result.workload.jobs
    done = (result.start_s >= 0) & (result.end_s >= 0)
    if not done.any():
        return np.empty(0)
    wait = (result.start_s - jobs["submit_s"])[done]
    run = (result.end_s - result.start_s)[done]
    bsld = bounded_slowdown(wait, run)
    users, index = np.unique(jobs["user_id"][done], return_inverse=True)
    total = np.bincount(index, weights=bsld, minlength=len(users))
    return total / np.bincount(index, minlength=len(users))


def jain_index(values: np.ndarray) -> float:
    """Jain's fairness index of non-negative values (nan when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.any(values):
        return math.nan if values.size == 0 else 1.0
    return float(values.sum() ** 2 / (values.size * np.sum(values**2)))
