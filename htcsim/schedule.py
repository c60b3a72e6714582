"""A schedule: what a replay (and later the live agent's log) says happened to each job.

It belongs to the shared domain, below the drivers, so that metrics, plots
and writers read it without importing a driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from htcsim.cluster import Cluster
from htcsim.model import Workload
from htcsim.policy import Policy

ESTIMATE_DTYPE = np.dtype(
    [
        ("job_idx", np.int64),  # row of the job in workload.jobs
        ("at_s", np.int64),  # when the estimate was asked (the job's submit pass)
        ("estimate_s", np.int64),  # the kernel's estimated start, -1 if it could never start
    ]
)


@dataclass(frozen=True)
class SimResult:
    """The schedule of one replay.

    ``start_s``/``end_s`` are aligned with ``workload.jobs`` (row k is job k);
    -1 marks a job that never started or never ended (none, for a replay that
    ran to completion). ``run_s`` is the simulated run time: the recorded run
    time capped at the requested time (the job is killed then).
    """

    workload: Workload
    policy: Policy
    start_s: np.ndarray
    end_s: np.ndarray
    replay_seconds: float = 0.0  # wall-clock time of the event loop
    counters: dict[str, int] = field(default_factory=dict)
    cluster: Cluster | None = None  # the nodes replayed on, when not the workload's machine
    estimates: np.ndarray | None = None  # ESTIMATE_DTYPE rows, when sampled
    cancelled: np.ndarray | None = None  # bool per job: a dependency could never be met
    requeues: np.ndarray | None = None  # per job: times requeued because its node failed
    lost_s: np.ndarray | None = None  # per job: run seconds lost to those failures
    saved_s: np.ndarray | None = None  # per job: run seconds checkpoints saved from failures
    node_failed: np.ndarray | None = None  # bool per job: ended failed because its node failed
    pool: Cluster | None = None  # the node pool the kernel held (autoscaling: each type's max)
    node_seconds: np.ndarray | None = None  # per pool node: seconds provisioned (cost basis)
    node_series: pl.DataFrame | None = None  # kernel state after each step (SERIES_COLUMNS)

    @property
    def total_cores(self) -> int:
        """Cores of the machine the schedule ran on (for utilization); with
        autoscaling, of the whole pool the autoscaler could boot."""
        if self.pool is not None:
            return self.pool.total_cores
        if self.cluster is not None:
            return self.cluster.total_cores
        return self.workload.machine.total_cores

    @property
    def wait_s(self) -> np.ndarray:
        return self.start_s - self.workload.jobs["submit_s"]

    @property
    def run_s(self) -> np.ndarray:
        return self.end_s - self.start_s

    @property
    def killed_at_walltime(self) -> np.ndarray:
        """Jobs that ran shorter than their recorded run time: killed at their request."""
        ended = (self.start_s >= 0) & (self.end_s >= 0)
        ran = self.end_s - self.start_s
        if self.saved_s is not None:
            ran = ran + self.saved_s  # a restart from a checkpoint runs only the rest
        if self.node_failed is not None:
            ended &= ~self.node_failed
        return ended & (ran < self.workload.jobs["run_s"])

    def time_series(self):  # type: ignore[no-untyped-def]
        """Busy cores, utilization, queued and running jobs at every event time (polars)."""
        from htcsim.metrics import time_series

        return time_series(self)
