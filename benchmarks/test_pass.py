"""One scheduling pass with 10,000 and 100,000 queued jobs on 1,000 nodes.

The machine (1,000 nodes x 32 cores) is full but for 16 cores, held by
running jobs with staggered requested ends; the queue holds jobs of 17 to
512 cores that cannot start now, so a pass must look at every one of them
(EASY: one reservation, then a backfill scan; conservative: a reservation
each). Nothing starts, so every round measures the same full pass.

A conservative pass ends as soon as no remaining job could fit in what is
free now (its decisions are then complete); the reservations of the jobs it
did not reach are computed when asked for. ``test_pass_and_all_reservations``
measures that complete answer: a pass plus a reservation for every job.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import sized
from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, node_capacity
from htcsim.policy import Policy

N_NODES, CORES = 1_000, 32


def loaded_kernel(backfill: str, n_queued: int) -> Kernel:
    rng = np.random.default_rng(1)
    kernel = Kernel(node_capacity(N_NODES, CORES), Policy(backfill=backfill))
    n_running = N_NODES  # 999 jobs of 32 cores and one of 16: 16 cores stay free
    running = np.zeros(n_running, dtype=JOB_SPEC_DTYPE)
    running["job_id"] = np.arange(n_running)
    running["walltime_s"] = rng.integers(4_200, 86_400, n_running)  # all still running at 3,600
    running["n_tasks"] = 32
    running["n_tasks"][-1] = 16
    running["per_task"][:, 0] = 1
    queued = np.zeros(n_queued, dtype=JOB_SPEC_DTYPE)
    queued["job_id"] = np.arange(n_running, n_running + n_queued)
    queued["submit_s"] = np.sort(rng.integers(0, 3_600, n_queued))
    queued["walltime_s"] = rng.integers(600, 172_800, n_queued)
    queued["n_tasks"] = rng.integers(17, 513, n_queued)
    queued["per_task"][:, 0] = 1
    kernel.add_jobs(running)
    for slot in range(n_running):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    assert kernel.n_running == n_running
    first = kernel.add_jobs(queued)
    for slot in range(first, first + n_queued):
        kernel.submit(slot, 3_600)
    return kernel


@pytest.mark.parametrize("n_queued", [10_000, 100_000])
@pytest.mark.parametrize("backfill", ["easy", "conservative"])
def test_one_full_pass(benchmark, backfill: str, n_queued: int) -> None:
    n_queued = sized(benchmark, n_queued, min(n_queued, 10_000))
    kernel = loaded_kernel(backfill, n_queued)
    policy = kernel.policy

    def one_pass() -> int:
        kernel.configure(policy)  # marks the state changed: the next pass is a full one
        return kernel.schedule(3_600)

    rounds = 20 if backfill == "easy" or n_queued <= 10_000 else 3
    started = benchmark.pedantic(one_pass, rounds=rounds, iterations=1, warmup_rounds=1)
    assert started == 0
    assert kernel.n_pending == n_queued
    benchmark.extra_info["us_per_pass"] = round(benchmark.stats.stats.median * 1e6)


@pytest.mark.parametrize("n_queued", [10_000, 100_000])
def test_pass_and_all_reservations(benchmark, n_queued: int) -> None:
    n_queued = sized(benchmark, n_queued, min(n_queued, 10_000))
    kernel = loaded_kernel("conservative", n_queued)
    policy = kernel.policy

    def pass_and_reservations() -> np.ndarray:
        kernel.configure(policy)
        kernel.schedule(3_600)
        return kernel.reservations()

    rounds = 5 if n_queued <= 10_000 else 1
    reservations = benchmark.pedantic(pass_and_reservations, rounds=rounds, iterations=1)
    assert (reservations[-n_queued:] > 3_600).all()
    benchmark.extra_info["us_per_pass"] = round(benchmark.stats.stats.median * 1e6)
