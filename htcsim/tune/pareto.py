"""Multi-objective search: NSGA-II (pymoo) over the unit cube of a search space.

Each generation is one batch of trials, replayed in parallel by the study;
the first population holds the baselines that lie in the space, the rest a
Latin hypercube sample. Constraints reach pymoo as inequalities (a trial's
violation of each, 0 when met): a feasible trial dominates every infeasible
one. Deterministic given the study's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def nsga2(
    losses_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    *,
    dims: int,
    n_obj: int,
    n_constr: int = 0,
    seed: int,
    n_trials: int,
    seeds: list[np.ndarray],
    on_batch: Callable[[int, int], None] | None = None,
) -> None:
    """Run NSGA-II for about ``n_trials`` training replays.

    ``losses_of`` replays a batch of points of the unit cube (one row each) and
    returns their losses, shape (n, n_obj), inf where a replay failed, and
    their violations of the ``n_constr`` constraints, shape (n, n_constr), 0
    where met; the study behind it stores every trial. ``on_batch(done,
    budget)`` is told after each batch. The search knows nothing of the
    study, so the study can call it without the two modules importing each
    other.
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.optimize import minimize
    from scipy.stats import qmc

    size = max(4, min(4 * dims + 4, n_trials // 3 or 1))
    generations = max(1, n_trials // size)
    init = qmc.LatinHypercube(d=dims, rng=np.random.default_rng(seed)).random(size)
    for k, point in enumerate(seeds[:size]):
        init[k] = point
    done = 0

    class _Space(Problem):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(n_var=dims, n_obj=n_obj, n_ieq_constr=n_constr, xl=0.0, xu=1.0)

        def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            nonlocal done
            losses, violations = losses_of(x)
            losses[~np.isfinite(losses)] = 1e300
            done += len(x)
            if on_batch is not None:
                on_batch(done, size * generations)
            out["F"] = losses
            if n_constr:
                out["G"] = np.where(np.isfinite(violations), violations, 1e300)

    minimize(
        _Space(),
        NSGA2(pop_size=size, sampling=init, eliminate_duplicates=True),
        ("n_gen", generations),
        seed=seed,
        verbose=False,
    )
