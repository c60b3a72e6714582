"""Drive the compiled kernel over a small job list, without SimPy.

The same loop as the simulator's driver (next event time, apply events,
one pass, record starts), so kernel tests do not depend on the simulator,
and an ``on_pass`` hook can inspect the state after every pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, ReplayFeed, node_capacity
from htcsim.policy import Policy
from tests.reference import RefJob


def specs_of(jobs: list[RefJob]) -> tuple[np.ndarray, np.ndarray]:
    """Kernel specs in submit order, and the permutation back to ``jobs``' order."""
    order = np.array(sorted(range(len(jobs)), key=lambda i: (jobs[i].submit, i)), dtype=np.int64)
    specs = np.zeros(len(jobs), dtype=JOB_SPEC_DTYPE)
    for slot, i in enumerate(order):
        job = jobs[i]
        specs[slot]["job_id"] = job.job_id
        specs[slot]["submit_s"] = job.submit
        specs[slot]["walltime_s"] = job.walltime
        specs[slot]["n_tasks"] = job.cores
        specs[slot]["per_task"][0] = 1
        specs[slot]["priority"] = job.priority
        specs[slot]["user_idx"] = job.user
    return specs, order


def run_kernel(
    jobs: list[RefJob],
    n_nodes: int,
    cores_per_node: int,
    backfill: str,
    order: str = "fcfs",
    on_pass: Callable[[Kernel, int], None] | None = None,
    placement: str = "first_fit",
    limits: tuple[int, int] = (0, 0),
) -> tuple[list[int], list[int]]:
    """Start and end times (in ``jobs``' order) as the kernel schedules them."""
    policy = Policy(
        order=order,  # type: ignore[arg-type]
        backfill=backfill,  # type: ignore[arg-type]
        placement=placement,  # type: ignore[arg-type]
        max_running_jobs_per_user=limits[0],
        max_cores_per_user=limits[1],
    )
    kernel = Kernel(node_capacity(n_nodes, cores_per_node), policy)
    specs, perm = specs_of(jobs)
    kernel.add_jobs(specs)
    duration = np.array([min(jobs[i].run, jobs[i].walltime) for i in perm], dtype=np.int64)
    feed = ReplayFeed(kernel, specs["submit_s"], duration)
    now = feed.next_time()
    while now >= 0:
        at, now = now, feed.step(now)
        if on_pass is not None:
            on_pass(kernel, at)
    start = np.empty(len(jobs), dtype=np.int64)
    end = np.empty(len(jobs), dtype=np.int64)
    start[perm] = kernel.start_times()
    end[perm] = kernel.end_times()
    return start.tolist(), end.tolist()
