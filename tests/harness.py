"""Drive the compiled kernel over a small job list, without SimPy.

The same loop as the simulator's driver (next event time, apply events,
one pass, record starts), so kernel tests do not depend on the simulator,
and an ``on_pass`` hook can inspect the state after every pass.

Jobs go to the kernel in submit order (the feed's slots are the kernel's), so
everything indexed by the caller's job list (dependencies, ok flags, results)
is mapped through the slot permutation of ``specs_of``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from htcsim.kernel import DEPENDENCY_KINDS, JOB_SPEC_DTYPE, Kernel, ReplayFeed, node_capacity
from htcsim.policy import Policy
from tests.reference import Limits, RefJob, Reservation


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
        specs[slot]["group_idx"] = job.group
        specs[slot]["qos_idx"] = -1
    return specs, order


def dependency_arrays(
    jobs: list[RefJob], perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(child slots, parent slots, kind codes, think times) of every dependency."""
    slot_of = np.empty(len(jobs), dtype=np.int64)
    slot_of[perm] = np.arange(len(jobs))
    edges = [
        (slot_of[c], slot_of[p], DEPENDENCY_KINDS[kind], delay)
        for c, job in enumerate(jobs)
        for p, kind, delay in job.deps
    ]
    columns = list(zip(*edges, strict=True)) if edges else [(), (), (), ()]
    dtypes = (np.int32, np.int32, np.int32, np.int64)
    child, parent, kind, delay = (
        np.array(c, dtype=d) for c, d in zip(columns, dtypes, strict=True)
    )
    return child, parent, kind, delay


def policy_of(
    backfill: str,
    order: str = "fcfs",
    placement: str = "first_fit",
    limits: tuple[int, int] | Limits = (0, 0),
) -> Policy:
    """The policy that means what the reference means by these arguments."""
    if not isinstance(limits, Limits):
        limits = Limits(*limits)
    return Policy(
        order=order,  # type: ignore[arg-type]
        backfill=backfill,  # type: ignore[arg-type]
        placement=placement,  # type: ignore[arg-type]
        max_running_jobs_per_user=limits.jobs,
        max_cores_per_user=limits.cores,
        max_queued_jobs_per_user=limits.queued,
        max_running_jobs_per_group=limits.group_jobs,
        max_cores_per_group=limits.group_cores,
        max_queued_jobs_per_group=limits.group_queued,
    )


@dataclass
class KernelRun:
    """Results in the caller's job order, and the kernel (for further queries)."""

    start: list[int]
    end: list[int]
    cancelled: list[bool]
    kernel: Kernel
    slots: np.ndarray  # slots[i]: kernel slot of the caller's job i


def replay(
    kernel: Kernel,
    submit_s: np.ndarray,
    duration_s: np.ndarray,
    ok: np.ndarray | None = None,
    on_pass: Callable[[Kernel, int], None] | None = None,
) -> list[int]:
    """Feed every event to a loaded kernel until nothing is left; the pass times."""
    feed = ReplayFeed(kernel, submit_s, duration_s, ok)
    passes = []
    now = feed.next_time()
    while now >= 0:
        at, now = now, feed.step(now)
        passes.append(at)
        if on_pass is not None:
            on_pass(kernel, at)
    return passes


def run_kernel_detailed(
    jobs: list[RefJob],
    n_nodes: int,
    cores_per_node: int,
    backfill: str,
    order: str = "fcfs",
    on_pass: Callable[[Kernel, int], None] | None = None,
    placement: str = "first_fit",
    limits: tuple[int, int] | Limits = (0, 0),
    policy: Policy | None = None,
    reservations: tuple[Reservation, ...] = (),
) -> KernelRun:
    """Run ``jobs`` (dependencies and ok flags included) through the kernel.

    ``policy`` replaces the one built from the other arguments (e.g. to turn
    on the starvation guard or multifactor priority); ``reservations`` are
    added before any job.
    """
    policy = policy or policy_of(backfill, order, placement, limits)
    kernel = Kernel(node_capacity(n_nodes, cores_per_node), policy)
    for r in reservations:
        kernel.add_reservation(r.start, r.end, np.array(sorted(r.nodes)), r.owner_kind, r.owner)
    specs, perm = specs_of(jobs)
    kernel.add_jobs(specs)
    child, parent, kind, delay = dependency_arrays(jobs, perm)
    if len(child):
        kernel.add_dependencies(child, parent, kind, delay)
    duration = np.array([min(jobs[i].run, jobs[i].walltime) for i in perm], dtype=np.int64)
    ok = np.array([jobs[i].ok for i in perm], dtype=np.int8)
    replay(kernel, specs["submit_s"], duration, ok, on_pass)
    start = np.empty(len(jobs), dtype=np.int64)
    end = np.empty(len(jobs), dtype=np.int64)
    cancelled = np.empty(len(jobs), dtype=bool)
    start[perm] = kernel.start_times()
    end[perm] = kernel.end_times()
    cancelled[perm] = kernel.dependency_cancelled() == 1
    slots = np.empty(len(jobs), dtype=np.int64)
    slots[perm] = np.arange(len(jobs))
    return KernelRun(start.tolist(), end.tolist(), cancelled.tolist(), kernel, slots)


def run_kernel(
    jobs: list[RefJob],
    n_nodes: int,
    cores_per_node: int,
    backfill: str,
    order: str = "fcfs",
    on_pass: Callable[[Kernel, int], None] | None = None,
    placement: str = "first_fit",
    limits: tuple[int, int] | Limits = (0, 0),
) -> tuple[list[int], list[int]]:
    """Start and end times (in ``jobs``' order) as the kernel schedules them."""
    run = run_kernel_detailed(
        jobs, n_nodes, cores_per_node, backfill, order, on_pass, placement, limits
    )
    return run.start, run.end
