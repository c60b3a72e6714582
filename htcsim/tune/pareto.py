"""Multi-objective search: NSGA-II (pymoo) over the unit cube of a search space.

Each generation is one batch of trials, replayed in parallel by the study;
the first population holds the baselines that lie in the space, the rest a
Latin hypercube sample. Deterministic given the study's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from htcsim.tune.study import Study, TrialStep


def nsga2(
    study: Study,
    n_trials: int,
    seeds: list[np.ndarray],
    progress: Callable[[TrialStep], None] | None,
) -> None:
    """Run NSGA-II for about ``n_trials`` training replays; the study stores them."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.optimize import minimize
    from scipy.stats import qmc

    from htcsim.tune.study import TRAIN, TrialStep

    dims = study.space.dimensions
    n_obj = len(study.objective.terms)
    size = max(4, min(4 * dims + 4, n_trials // 3 or 1))
    generations = max(1, n_trials // size)
    init = qmc.LatinHypercube(d=dims, rng=np.random.default_rng(study.seed)).random(size)
    for k, point in enumerate(seeds[:size]):
        init[k] = point
    done = 0

    class _Space(Problem):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(n_var=dims, n_obj=n_obj, xl=0.0, xu=1.0)

        def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            nonlocal done
            metrics = study.evaluate([(TRAIN, study.space.values(p)) for p in x])
            losses = np.array(
                [
                    study.objective.losses(m) if m is not None else np.full(n_obj, np.inf)
                    for m in metrics
                ]
            )
            losses[~np.isfinite(losses)] = 1e300
            done += len(x)
            if progress is not None:
                best = float(np.min(losses[:, 0]))
                progress(TrialStep(done, size * generations, best))
            out["F"] = losses

    minimize(
        _Space(),
        NSGA2(pop_size=size, sampling=init, eliminate_duplicates=True),
        ("n_gen", generations),
        seed=study.seed,
        verbose=False,
    )
