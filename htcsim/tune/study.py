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

Constraints (``htcsim.tune.constraints``) bound metrics relative to the base
policy's replay of the same part (the baseline): a trial that breaks one is
infeasible, ranks behind every feasible trial in the search (differential
evolution sees a penalty, NSGA-II the violations) and is never chosen.

A trial whose effective policy (its inert fields at their defaults, see
``htcsim.policy.inert_fields``) equals one already replayed on the same part
reuses that replay's result: a space that searches a field the other values
make inert costs one replay per distinct schedule, not one per point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from htcsim.cluster import Cluster
from htcsim.model import Workload
from htcsim.policy import Policy, PolicyError, effective_policy
from htcsim.tune.constraints import Constraint, broken, total_violation
from htcsim.tune.objective import Objective
from htcsim.tune.space import SearchSpace
from htcsim.tune.store import StudyStore, key_of
from htcsim.tune.trials import TrialOutcome, TrialRunner

TRAIN = "train"
TEST = "test"


PENALTY = 1e30
"""Loss of an infeasible trial, times (1 + its violation): behind every feasible one."""


def baselines(base: Policy) -> dict[str, Policy]:
    """The policies every study is compared with, on the base policy's other
    settings; the base policy itself first, as ``base``, when it is none of them."""
    out = {
        "fcfs": replace(base, order="fcfs", backfill="none"),
        "fcfs+easy": replace(base, order="fcfs", backfill="easy"),
        "multifactor+easy": replace(base, order="multifactor", backfill="easy"),
    }
    if baseline_of(out, base) is None:
        out = {"base": base, **out}
    return out


def baseline_of(policies: dict[str, Policy], base: Policy) -> str | None:
    """The name of the policy that schedules as ``base`` does (None: none)."""
    target = effective_policy(base, node_failures=False)
    for name, policy in policies.items():
        if effective_policy(policy, node_failures=False) == target:
            return name
    return None


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
    trials: list[dict[str, Any]]  # StudyStore.rows(), with each train trial's loss and violation
    pareto: list[dict[str, Any]]  # non-dominated train trials (Pareto studies)
    n_replayed: int  # trials this run actually replayed (the rest were stored or reused)
    others: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # other trace -> policy ("tuned" or a baseline) -> metrics on it
    constraints: tuple[Constraint, ...] = ()
    baseline: str = "fcfs+easy"  # the baseline the constraints are relative to (the base policy)

    def broken(self, metrics: dict[str, float], part: str = TRAIN) -> list[Constraint]:
        """The constraints ``metrics`` break, against the baseline's on ``part``
        (train or test)."""
        train, test = self.baselines[self.baseline]
        return broken(self.constraints, metrics, train if part == TRAIN else test)


class NoFeasibleTrial(ValueError):
    """Every trial broke a constraint: the study has nothing it may choose."""


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
        dask_security: Any = None,
        others: dict[str, Workload] | None = None,
        constraints: tuple[Constraint, ...] = (),
    ) -> None:
        self.space = space
        self.objective = objective
        self.constraints = constraints
        self.seed = seed
        train, test = split_workload(workload, train_fraction)
        self.parts = {TRAIN: train, TEST: test}
        self.others = sorted(others or {})
        for name, other in (others or {}).items():
            self.parts[f"other:{name}"] = other
        self.store = store if store is not None else StudyStore(None, {})
        self._owns_runner = runner is None
        self.runner = runner or TrialRunner(
            self.parts,
            cluster,
            workers=workers,
            dask_address=dask_address,
            dask_security=dask_security,
        )
        self.n_replayed = 0
        self._reference: dict[str, float] = {}
        self._baseline: dict[str, float] = {}
        self._numbers: dict[tuple[str, str], int] = {}

    def evaluate(self, trials: list[tuple[str, dict[str, Any]]]) -> list[dict[str, float] | None]:
        """Metrics of each (part, values) of the space (see ``_evaluate``)."""
        requests: list[tuple[str, dict[str, Any], str, Policy | PolicyError]] = []
        for part, values in trials:
            try:
                policy: Policy | PolicyError = self.space.policy(values)
            except PolicyError as exc:
                policy = exc
            requests.append((part, values, part, policy))
        return self._evaluate(requests)

    def _evaluate(
        self, requests: list[tuple[str, dict[str, Any], str, Policy | PolicyError]]
    ) -> list[dict[str, float] | None]:
        """Metrics of each (label, params, part replayed, policy): read from the
        store when it has them, else reused from a replay of the same effective
        policy, else replayed (in one parallel batch) and stored as each ends.
        None: the values make no valid policy, or the replay refused it (the
        error is stored)."""
        out: list[dict[str, float] | None] = [None] * len(requests)
        waiting: dict[str, list[tuple[int, int, str, dict[str, Any]]]] = {}
        to_run: list[tuple[str, str, Policy]] = []
        for k, (label, params, part, policy) in enumerate(requests):
            number = self._number(label, params)
            stored = self.store.get(label, params)
            if stored is not None:
                out[k] = stored["metrics"]
                continue
            if isinstance(policy, PolicyError):
                self.store.put(number, label, params, None, str(policy), 0.0)
                continue
            effective = key_of(
                {"part": part, "policy": effective_policy(policy, node_failures=False).to_dict()}
            )
            if effective in waiting:  # the same schedule twice in one batch: replayed once
                waiting[effective].append((k, number, label, params))
                continue
            earlier = self.store.replayed(effective)
            if earlier is not None:
                self.store.put(
                    number,
                    label,
                    params,
                    earlier["metrics"],
                    earlier["error"],
                    0.0,
                    effective=effective,
                    same_as=earlier["number"],
                )
                out[k] = earlier["metrics"]
                continue
            waiting[effective] = [(k, number, label, params)]
            to_run.append((effective, part, policy))

        def store_one(i: int, outcome: TrialOutcome) -> None:
            metrics, error, seconds = outcome
            effective = to_run[i][0]
            (at, first, label, params), *rest = waiting[effective]
            self.store.put(first, label, params, metrics, error, seconds, effective=effective)
            out[at] = metrics
            for at, number, label, params in rest:
                self.store.put(
                    number, label, params, metrics, error, 0.0, effective=effective, same_as=first
                )
                out[at] = metrics

        self.runner.run([(part, policy) for _, part, policy in to_run], store_one)
        self.n_replayed += len(to_run)
        return out

    def _number(self, label: str, params: dict[str, Any]) -> int:
        """The trial's number: the order in which the study first asked for it
        (the same in a resumed study, whatever order the replays end in)."""
        key = (label, key_of(params))
        if key not in self._numbers:
            self._numbers[key] = len(self._numbers) + 1
        return self._numbers[key]

    def loss(self, metrics: dict[str, float] | None) -> float:
        """The objective's loss of a feasible trial; an infeasible one's is
        ``PENALTY * (1 + violation)``, a failed one's inf."""
        if metrics is None:
            return math.inf
        violation = self.violation(metrics)
        if violation > 0:
            return PENALTY * (1.0 + min(violation, 1e6)) if math.isfinite(violation) else math.inf
        return self.objective.scalar(metrics, self._reference)

    def violation(self, metrics: dict[str, float] | None) -> float:
        """How far a training trial is from meeting the constraints (0: feasible)."""
        if metrics is None:
            return math.inf
        return total_violation(self.constraints, metrics, self._baseline)

    def run(
        self, n_trials: int, progress: Callable[[TrialStep], None] | None = None
    ) -> StudyResult:
        """Search with about ``n_trials`` replays of the training part."""
        if n_trials < 1:
            raise ValueError("a study needs at least one trial")
        base_policies = baselines(self.space.base)
        baseline = baseline_of(base_policies, self.space.base) or "base"
        base_train = self._evaluate_policies(base_policies, TRAIN)
        self._reference = base_train["fcfs+easy"]
        self._baseline = base_train[baseline]
        for c in self.constraints:
            if not math.isfinite(c.bound(self._baseline)):
                raise ValueError(
                    f"constraint {c.text}: the baseline ({baseline}) has no {c.metric} "
                    "on the training part to compare with"
                )
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
        feasible = [r for r in train_rows if self.violation(r["metrics"]) == 0]
        if not feasible:
            closest = min(train_rows, key=lambda r: (self.violation(r["metrics"]), r["number"]))
            texts = ", ".join(c.text for c in self.constraints)
            worst = ", ".join(
                c.text for c in broken(self.constraints, closest["metrics"], self._baseline)
            )
            raise NoFeasibleTrial(
                f"no trial met the constraints ({texts}, baseline {baseline}) on the training "
                f"part; the closest (trial {closest['number']}) breaks {worst}: loosen them "
                "(--constraint, --no-guard) or widen the space"
            )
        best = min(feasible, key=lambda r: (self.loss(r["metrics"]), r["number"]))
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
            train = row["part"] == TRAIN
            # the objective's own value: feasibility is a column of its own
            row["loss"] = (
                self.objective.scalar(row["metrics"], self._reference)
                if train and row["metrics"] is not None
                else math.nan
            )
            row["violation"] = self.violation(row["metrics"]) if train else math.nan
        train_rows = [
            r
            for r in rows
            if r["part"] == TRAIN and r["metrics"] is not None and r["violation"] == 0
        ]
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
            constraints=self.constraints,
            baseline=baseline,
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
        best = math.inf

        def losses_of(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            nonlocal best
            metrics = self.evaluate([(TRAIN, self.space.values(p)) for p in points])
            losses = np.array(
                [
                    self.objective.losses(m) if m is not None else np.full(n_obj, np.inf)
                    for m in metrics
                ]
            )
            violations = np.array(
                [
                    [
                        c.violation(m, self._baseline) if m is not None else math.inf
                        for c in self.constraints
                    ]
                    for m in metrics
                ]
            ).reshape(len(points), len(self.constraints))
            feasible = np.all(violations == 0, axis=1) & np.isfinite(losses[:, 0])
            if feasible.any():
                best = min(best, float(np.min(losses[feasible, 0])))
            return losses, violations

        def on_batch(done: int, budget: int) -> None:
            if progress is not None:
                progress(TrialStep(done, budget, best))

        nsga2(
            losses_of,
            dims=self.space.dimensions,
            n_obj=n_obj,
            n_constr=len(self.constraints),
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
        names = list(policies)
        metrics = self._evaluate(
            [(f"{part}:baseline", {"baseline": name}, part, policies[name]) for name in names]
        )
        return {name: m or {} for name, m in zip(names, metrics, strict=True)}

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
            finite = losses[np.isfinite(losses) & (losses < PENALTY)]
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
