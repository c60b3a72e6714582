"""Multifactor priority: recomputing every pending job's priority, and what it costs a replay.

``test_recompute_100k_pending`` times one recomputation (usage decayed and
accrued, fairshare factors of 1,000 users, 100,000 priorities, the queue
re-sorted) with 100,000 jobs pending: the work a pass does once per
``priority_interval_s``, never per event.
"""

from __future__ import annotations

import numpy as np
import pytest

from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, node_capacity
from htcsim.policy import Policy

N_NODES, CORES, N_USERS = 1_000, 32, 1_000


def pending_kernel(n_queued: int, algorithm: str) -> Kernel:
    """1,000 full nodes (running jobs of every user) and ``n_queued`` jobs waiting."""
    rng = np.random.default_rng(2)
    policy = Policy(
        order="multifactor",
        priority_weight_fairshare=10_000.0,
        priority_weight_size=100.0,
        fairshare_algorithm=algorithm,  # type: ignore[arg-type]
    )
    kernel = Kernel(node_capacity(N_NODES, CORES), policy)
    running = np.zeros(N_NODES, dtype=JOB_SPEC_DTYPE)
    running["job_id"] = np.arange(N_NODES)
    running["walltime_s"] = 86_400
    running["n_tasks"] = CORES
    running["per_task"][:, 0] = 1
    running["user_idx"] = np.arange(N_NODES) % N_USERS
    running["group_idx"] = running["user_idx"] % 20
    running["qos_idx"] = -1
    queued = np.zeros(n_queued, dtype=JOB_SPEC_DTYPE)
    queued["job_id"] = np.arange(N_NODES, N_NODES + n_queued)
    queued["submit_s"] = np.sort(rng.integers(0, 3_600, n_queued))
    queued["walltime_s"] = rng.integers(600, 86_400, n_queued)
    queued["n_tasks"] = rng.integers(1, 64, n_queued)
    queued["per_task"][:, 0] = 1
    queued["user_idx"] = rng.integers(0, N_USERS, n_queued)
    queued["group_idx"] = queued["user_idx"] % 20
    queued["qos_idx"] = -1
    kernel.add_jobs(running)
    kernel.set_accounts(np.arange(N_USERS), np.arange(20))
    for slot in range(N_NODES):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    first = kernel.add_jobs(queued)
    for slot in range(first, first + n_queued):
        kernel.submit(slot, int(queued["submit_s"][slot - first]))
    return kernel


@pytest.mark.parametrize("algorithm", ["classic", "fair_tree"])
def test_recompute_100k_pending(benchmark, algorithm: str) -> None:
    kernel = pending_kernel(100_000, algorithm)
    clock = iter(range(3_600, 10**9, 300))
    benchmark.pedantic(lambda: kernel.recompute_priorities(next(clock)), rounds=20, iterations=1)
    assert kernel.n_pending == 100_000
    benchmark.extra_info["us_per_recompute"] = round(benchmark.stats.stats.median * 1e6)
    print(
        f"\nrecompute, 100,000 pending, {algorithm}: {benchmark.stats.stats.median * 1e6:,.0f} us"
    )
