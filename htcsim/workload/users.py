"""Who submits: synthetic user ids shared by the workload generators.

A few users submit most jobs in every real log; a Zipf law over user ranks
reproduces that skew so per-user metrics and fairshare have something to show.
"""

from __future__ import annotations

import numpy as np


def zipf_user_ids(
    rng: np.random.Generator, n: int, n_users: int, exponent: float = 1.0
) -> np.ndarray:
    """``n`` user ids in 1..n_users, P(user k) proportional to ``k ** -exponent``."""
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    if exponent < 0:
        raise ValueError(f"the Zipf exponent must be >= 0, got {exponent}")
    cdf = np.cumsum(np.arange(1, n_users + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    ids = np.searchsorted(cdf, rng.random(n), side="right") + 1
    return np.minimum(ids, n_users).astype(np.int32)
