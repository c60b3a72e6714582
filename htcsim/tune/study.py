"""A tuning study: search a policy space on the first part of a trace, judge it on the rest.

The trace is split by job count: the first ``train_fraction`` of the jobs
(by submit order) are the training part, the rest the test part, so that
``htcsim simulate TRACE --max-jobs N --policy best_policy.toml`` replays
exactly the training part. The search sees the training part only; the best
policy and the baselines (FCFS, FCFS+EASY, the default multifactor) are then
replayed on both parts, side by side, so that overfitting shows.

One objective: SciPy's differential evolution over the unit cube of the
space (each generation is one batch of trials, run in parallel), its first
population seeded with the baselines that lie in the space, so the result is
never worse than them on the training part. Several objectives with
``pareto``: NSGA-II from pymoo, and the Pareto front of every trial run.
Both are deterministic given the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from htcsim.cluster import Cluster
from htcsim.model import Workload
from htcsim.policy import Policy, PolicyError
from htcsim.tune.objective import Objective
from htcsim.tune.space import SearchSpace
from htcsim.tune.store import StudyStore
from htcsim.tune.trials import TrialRunner

TRAIN = "train"
TEST = "test"


def baselines(base: Policy) -> dict[str, Policy]:
    """The policies every study is compared with, on the base policy's other settings."""
    return {
        "fcfs": replace(base, order="fcfs", backfill="none"),
        "fcfs+easy": replace(base, order="fcfs", backfill="easy"),
        "multifactor+easy": replace(base, order="multifactor", backfill="easy"),
    }


def split_workload(workload: Workload, train_fraction: float) -> tuple[Workload, Workload]:
    """(first part, rest) by job count; a dependency on a job of the other
    part is dropped (that job is not replayed with it)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"the training fraction must be in (0, 1), got {train_fraction}")
    n_train = round(len(workload.jobs) * train_fraction)
    if not 0 < n_train < len(workload.jobs):
        raise ValueError(
            f"{len(workload.jobs)} jobs cannot be split at {train_fraction:.0%}: "
            "each part needs at least one job"
        )
    return _part(workload, 0, n_train, "train"), _part(
        workload, n_train, len(workload.jobs), "test"
    )


def _part(workload: Workload, first: int, end: int, name: str) -> Workload:
    jobs = workload.jobs[first:end].copy()
    inside = np.isin(jobs["preceding_job_id"], jobs["job_id"])
    jobs["preceding_job_id"][~inside] = -1
    return replace(workload, jobs=jobs, name=f"{workload.name}[{name}]")


@dataclass(frozen=True)
class TrialStep:
    """Reported after each batch of trials."""

    done: int  # trials run or read back so far
    budget: int  # trials the search will ask for
    best: float  # best loss so far (training part)


@dataclass(frozen=True)
class StudyResult:
    """What a study found, and everything it ran."""

    space: SearchSpace
    objective: Objective
    best_values: dict[str, Any]
    best_policy: Policy
    best_train: dict[str, float]
    best_test: dict[str, float]
    baselines: dict[str, tuple[dict[str, float], dict[str, float]]]  # name -> (train, test)
    trials: list[dict[str, Any]]  # StudyStore.rows(), with the loss of each train trial
    pareto: list[dict[str, Any]]  # non-dominated train trials (Pareto studies)
    n_replayed: int  # trials this run actually replayed (the rest were stored)
    others: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # other trace -> policy ("tuned" or a baseline) -> metrics on it


class Study:
    """Runs a search over ``space`` on a workload; see the module docstring."""

    def __init__(
        self,
        workload: Workload,
        space: SearchSpace,
        objective: Objective,
        *,
        train_fraction: float = 0.7,
        cluster: Cluster | None = None,
        seed: int = 1,
        store: StudyStore | None = None,
        runner: TrialRunner | None = None,
        workers: int = 1,
        dask_address: str | None = None,
        others: dict[str, Workload] | None = None,
    ) -> None:
        self.space = space
        self.objective = objective
        self.seed = seed
        train, test = split_workload(workload, train_fraction)
        self.parts = {TRAIN: train, TEST: test}
        self.others = sorted(others or {})
        for name, other in (others or {}).items():
            self.parts[f"other:{name}"] = other
        self.store = store if store is not None else StudyStore(None, {})
        self._owns_runner = runner is None
        self.runner = runner or TrialRunner(
            self.parts, cluster, workers=workers, dask_address=dask_address
        )
        self.n_replayed = 0
        self._reference: dict[str, float] = {}

    def evaluate(self, trials: list[tuple[str, dict[str, Any]]]) -> list[dict[str, float] | None]:
        """Metrics of each (part, values): read from the store when it has them,
        else replayed (in one parallel batch) and stored. None: the values make
        no valid policy, or the replay refused it (the error is stored)."""
        out: list[dict[str, float] | None] = [None] * len(trials)
        to_run: list[tuple[int, str, dict[str, Any], Policy]] = []
        for k, (part, values) in enumerate(trials):
            stored = self.store.get(part, values)
            if stored is not None:
                out[k] = stored[0]
                continue
            try:
                policy = self.space.policy(values)
            except PolicyError as exc:
                self.store.put(part, values, None, str(exc), 0.0)
                continue
            if any(part == p and values == v for _, p, v, _ in to_run):
                continue  # the same point twice in one batch: replayed once
            to_run.append((k, part, values, policy))
        outcomes = self.runner.run([(part, policy) for _, part, _, policy in to_run])
        self.n_replayed += len(outcomes)
        for (_, part, values, _), (metrics, error, seconds) in zip(to_run, outcomes, strict=True):
            self.store.put(part, values, metrics, error, seconds)
        for k, (part, values) in enumerate(trials):
            if out[k] is None:
                stored = self.store.get(part, values)
                out[k] = None if stored is None else stored[0]
        return out

    def loss(self, metrics: dict[str, float] | None) -> float:
        if metrics is None:
            return math.inf
        return self.objective.scalar(metrics, self._reference)

    def run(
        self, n_trials: int, progress: Callable[[TrialStep], None] | None = None
    ) -> StudyResult:
        """Search with about ``n_trials`` replays of the training part."""
        if n_trials < 1:
            raise ValueError("a study needs at least one trial")
        base_policies = baselines(self.space.base)
        base_train = self._evaluate_policies(base_policies, TRAIN)
        self._reference = base_train["fcfs+easy"]
        seeds = [
            p for p in (self.space.encode(pol) for pol in base_policies.values()) if p is not None
        ]
        if self.objective.pareto:
            self._nsga2(n_trials, seeds, progress)
        else:
            self._differential_evolution(n_trials, seeds, progress)
        train_rows = [
            r for r in self.store.rows() if r["part"] == TRAIN and r["metrics"] is not None
        ]
        if not train_rows:
            errors = [r["error"] for r in self.store.rows() if r["error"]]
            raise ValueError(
                "no trial of the study could be replayed"
                + (f"; the first error: {errors[0]}" if errors else "")
            )
        best = min(train_rows, key=lambda r: (self.loss(r["metrics"]), r["number"]))
        best_policy = self.space.policy(best["params"])
        best_test = self.evaluate([(TEST, best["params"])])[0] or {}
        base_test = self._evaluate_policies(base_policies, TEST)
        others = {}
        for name in self.others:
            part = f"other:{name}"
            others[name] = {
                "tuned": self.evaluate([(part, best["params"])])[0] or {},
                **self._evaluate_policies(base_policies, part),
            }
        rows = self.store.rows()
        for row in rows:
            row["loss"] = self.loss(row["metrics"]) if row["part"] == TRAIN else math.nan
        train_rows = [r for r in rows if r["part"] == TRAIN and r["metrics"] is not None]
        return StudyResult(
            space=self.space,
            objective=self.objective,
            best_values=best["params"],
            best_policy=best_policy,
            best_train=best["metrics"],
            best_test=best_test,
            baselines={name: (base_train[name], base_test[name]) for name in base_policies},
            trials=rows,
            pareto=_pareto_front(train_rows, self.objective) if self.objective.pareto else [],
            n_replayed=self.n_replayed,
            others=others,
        )

    def _nsga2(
        self,
        n_trials: int,
        seeds: list[np.ndarray],
        progress: Callable[[TrialStep], None] | None,
    ) -> None:
        """Several objectives: NSGA-II over the space, each batch replayed as training trials."""
        from htcsim.tune.pareto import nsga2

        n_obj = len(self.objective.terms)

        def losses_of(points: np.ndarray) -> np.ndarray:
            metrics = self.evaluate([(TRAIN, self.space.values(p)) for p in points])
            return np.array(
                [
                    self.objective.losses(m) if m is not None else np.full(n_obj, np.inf)
                    for m in metrics
                ]
            )

        def on_batch(done: int, budget: int, losses: np.ndarray) -> None:
            if progress is not None:
                progress(TrialStep(done, budget, float(np.min(losses[:, 0]))))

        nsga2(
            losses_of,
            dims=self.space.dimensions,
            n_obj=n_obj,
            seed=self.seed,
            n_trials=n_trials,
            seeds=seeds,
            on_batch=on_batch,
        )

    def close(self) -> None:
        """Stop the trial runner this study started (a runner passed in is the caller's)."""
        if self._owns_runner:
            self.runner.close()

    def _evaluate_policies(
        self, policies: dict[str, Policy], part: str
    ) -> dict[str, dict[str, float]]:
        """Baselines are stored under their own part names (they need not lie in the space)."""
        out: dict[str, dict[str, float]] = {}
        pending = []
        for name, policy in policies.items():
            key = {"baseline": name}
            stored = self.store.get(f"{part}:baseline", key)
            if stored is not None and stored[0] is not None:
                out[name] = stored[0]
            else:
                pending.append((name, policy))
        outcomes = self.runner.run([(part, policy) for _, policy in pending])
        self.n_replayed += len(outcomes)
        for (name, _), (metrics, error, seconds) in zip(pending, outcomes, strict=True):
            self.store.put(f"{part}:baseline", {"baseline": name}, metrics, error, seconds)
            out[name] = metrics or {}
        return out

    def _differential_evolution(
        self, n_trials: int, seeds: list[np.ndarray], progress: Callable[[TrialStep], None] | None
    ) -> None:
        from scipy.optimize import differential_evolution
        from scipy.stats import qmc

        dims = self.space.dimensions
        size = max(5, min(4 * dims + 4, n_trials // 3 or 1))
        size = min(size, n_trials) if n_trials >= 5 else 5
        generations = max(0, n_trials // size - 1)
        rng = np.random.default_rng(self.seed)
        init = qmc.LatinHypercube(d=dims, rng=rng).random(size)
        for k, point in enumerate(seeds[:size]):
            init[k] = point
        done = 0
        best = math.inf

        def batch(x: np.ndarray) -> np.ndarray:
            nonlocal done, best
            points = np.atleast_2d(x.T)
            metrics = self.evaluate([(TRAIN, self.space.values(p)) for p in points])
            losses = np.array([self.loss(m) for m in metrics])
            finite = losses[np.isfinite(losses)]
            losses[~np.isfinite(losses)] = 1e300  # DE needs finite values
            done += len(points)
            if finite.size:
                best = min(best, float(finite.min()))
            if progress is not None:
                progress(TrialStep(done, size * (generations + 1), best))
            return losses

        differential_evolution(
            batch,
            bounds=[(0.0, 1.0)] * dims,
            init=init,
            maxiter=generations,
            polish=False,
            tol=0.0,
            atol=0.0,
            rng=np.random.default_rng(self.seed + 1),
            vectorized=True,
            updating="deferred",
        )


def _pareto_front(rows: list[dict[str, Any]], objective: Objective) -> list[dict[str, Any]]:
    """The training trials no other trial beats on every metric (ties kept once)."""
    losses = np.array([objective.losses(r["metrics"]) for r in rows])
    keep: list[int] = []
    for k in range(len(rows)):
        if not np.all(np.isfinite(losses[k])):
            continue
        dominated = np.any(np.all(losses <= losses[k], axis=1) & np.any(losses < losses[k], axis=1))
        duplicate = any(np.array_equal(losses[k], losses[j]) for j in keep)
        if not dominated and not duplicate:
            keep.append(k)
    return [rows[k] for k in keep]
