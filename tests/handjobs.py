"""Hand-written kernel jobs for the policy and reason tests.

Unlike ``np.zeros`` specs, a ``KJob`` has no user, group or QoS (-1) unless the
test names one, so a scenario only carries the accounts it is about.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, ReplayFeed
from htcsim.policy import Policy


@dataclass(frozen=True)
class KJob:
    """One kernel job: ``tasks`` tasks of ``cores_per_task`` cores (and GPUs)."""

    tasks: int = 1
    wall: int = 100
    submit: int = 0
    user: int = -1
    group: int = -1
    qos: int = -1
    cores_per_task: int = 1
    gpus_per_task: int = 0
    job_id: int = 0  # 0: slot + 1


def kernel_specs(jobs: Sequence[KJob], first_id: int = 1) -> np.ndarray:
    """Kernel specs in the given order; job ids count from ``first_id`` unless set."""
    specs = np.zeros(len(jobs), dtype=JOB_SPEC_DTYPE)
    for k, job in enumerate(jobs):
        specs[k]["job_id"] = job.job_id or first_id + k
        specs[k]["submit_s"] = job.submit
        specs[k]["walltime_s"] = job.wall
        specs[k]["n_tasks"] = job.tasks
        specs[k]["per_task"][0] = job.cores_per_task
        specs[k]["per_task"][2] = job.gpus_per_task
        specs[k]["user_idx"] = job.user
        specs[k]["group_idx"] = job.group
        specs[k]["qos_idx"] = job.qos
    return specs


def kernel_with(capacity: np.ndarray, policy: Policy, jobs: Sequence[KJob]) -> Kernel:
    """A kernel holding ``jobs`` as slots 0.. (none submitted yet)."""
    kernel = Kernel(capacity, policy)
    kernel.add_jobs(kernel_specs(jobs))
    return kernel


def replay_jobs(
    kernel: Kernel,
    jobs: Sequence[KJob],
    duration: Sequence[int],
    ok: Sequence[int] | None = None,
    on_pass: Callable[[Kernel, int], None] | None = None,
) -> None:
    """Run ``jobs`` (the kernel's slots, in submit order) to the end with a feed, as
    the simulator does: each runs ``duration[slot]``; ``ok[slot]`` 0 marks a failure
    for its dependents. ``on_pass`` sees the state after every pass."""
    feed = ReplayFeed(
        kernel,
        np.array([job.submit for job in jobs], dtype=np.int64),
        np.array(duration, dtype=np.int64),
        None if ok is None else np.array(ok, dtype=np.int8),
    )
    now = feed.next_time()
    while now >= 0:
        at, now = now, feed.step(now)
        if on_pass is not None:
            on_pass(kernel, at)
