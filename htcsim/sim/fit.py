"""Which jobs of a workload the node pool of a replay could never hold.

A log replayed on another cluster (``htcsim simulate --cluster``) may hold jobs
larger than that cluster, or with a task larger than every node: the kernel
refuses the whole batch for one of them. Replaying without them is a choice
the user makes (``--skip-oversized``), so this module finds them, describes
the first in a sentence, and leaves them out, counted, when asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from htcsim.cluster import Cluster
from htcsim.kernel import RESOURCES, FitCheck, fit_check, job_specs
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.sim.driver import node_pool

OVERSIZED = "oversized"
"""The ``Workload.dropped`` reason of a job left out for fitting no node pool."""


@dataclass(frozen=True)
class Oversized:
    """The jobs the pool cannot hold (``mask``) and why, for a message."""

    mask: np.ndarray
    check: FitCheck
    specs: np.ndarray

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))

    def describe_first(self) -> str:
        """The first such job in a sentence: which job, what it needs, what the nodes have."""
        k = int(np.flatnonzero(self.mask)[0])
        job_id = int(self.specs["job_id"][k])
        n_tasks = int(self.specs["n_tasks"][k])
        per_task = self.specs["per_task"][k]
        too_big = self.check.too_big[k]
        if too_big.any():
            r = int(np.flatnonzero(too_big)[0])
            return (
                f"job {job_id} has a task of {_amount(RESOURCES[r], int(per_task[r]))}; "
                f"the largest node has {_amount(RESOURCES[r], int(self.check.biggest[k][r]))}"
            )
        r = int(np.flatnonzero(self.check.too_much[k])[0])
        need = int(per_task[r]) * n_tasks
        return (
            f"job {job_id} needs {_amount(RESOURCES[r], need)} in all ({n_tasks} tasks); "
            f"the nodes it may use have {_amount(RESOURCES[r], int(self.check.total[k][r]))}"
        )


def _amount(resource: str, value: int) -> str:
    if resource == "cores":
        return f"{value:,} core{'s' if value != 1 else ''}"
    if resource == "gpus":
        return f"{value:,} GPU{'s' if value != 1 else ''}"
    return f"{value:,} MiB of {resource.removesuffix('_mib')}"


def oversized_jobs(workload: Workload, policy: Policy, cluster: Cluster | None) -> Oversized:
    """The jobs no set of the replay's nodes could hold, as ``Kernel.add_jobs`` judges them."""
    nodes = node_pool(workload, policy, cluster)
    capacity = nodes.capacity()
    jobs = workload.jobs
    specs = job_specs(jobs, with_memory=bool(capacity[:, 1].any()), policy=policy)
    specs["part_idx"] = nodes.job_partition(jobs["partition_id"])
    check = fit_check(capacity, nodes.node_partition(), specs)
    return Oversized(check.unplaceable, check, specs)


def without_oversized(workload: Workload, oversized: Oversized) -> Workload:
    """The workload less the oversized jobs, counted in ``dropped`` as ``oversized``."""
    if not oversized.count:
        return workload
    dropped = Counter(workload.dropped)
    dropped[OVERSIZED] += oversized.count
    return replace(workload, jobs=workload.jobs[~oversized.mask], dropped=dropped)
