"""The Python face of the compiled kernel: the only importer of ``htcsim._core``.

It validates and coerces inputs at the boundary (dtypes, ranges, impossible
requests), then hands C arrays to the kernel; the hot loop never checks
anything again. Drivers (simulator, agent) use ``Kernel`` and ``ReplayFeed``
from here and nothing else of the compiled module.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from htcsim import _core
from htcsim.model import JOB_DTYPE
from htcsim.policy import Policy

JOB_SPEC_DTYPE: np.dtype = _core.JOB_SPEC_DTYPE
"""One kernel job: derived from the C struct ``JobSpec`` (core/_core.pxd)."""

AvailabilityProfile = _core.AvailabilityProfile
"""Free resources over future time (the structure behind reservations and estimates)."""

RESOURCES: tuple[str, ...] = tuple(_core.RESOURCE_NAMES)
N_RESOURCES: int = int(_core.N_RESOURCES)
NEVER = -1
"""Returned by estimates for a job that can never start on the current nodes."""

JobState = IntEnum("JobState", {k.upper(): v for k, v in _core.JOB_STATES.items()})  # type: ignore[misc]
Reason = IntEnum("Reason", dict(_core.REASONS))  # type: ignore[misc]
NodeState = IntEnum("NodeState", {k.upper(): v for k, v in _core.NODE_STATES.items()})  # type: ignore[misc]


class KernelInputError(ValueError):
    """A job or node table handed to the kernel is invalid; names the job or node."""


def node_capacity(
    n_nodes: int, cores: int, mem_mib: int = 0, gpus: int = 0, scratch_mib: int = 0
) -> np.ndarray:
    """A capacity table of ``n_nodes`` identical nodes, shape (n_nodes, N_RESOURCES)."""
    if n_nodes <= 0 or cores <= 0:
        raise KernelInputError(f"need at least one node with one core, got {n_nodes}x{cores}")
    table = np.empty((n_nodes, N_RESOURCES), dtype=np.int64)
    table[:] = (cores, mem_mib, gpus, scratch_mib)
    return table


def job_specs(jobs: np.ndarray, *, with_memory: bool = True) -> np.ndarray:
    """Kernel job specs from a workload table (``htcsim.model.JOB_DTYPE``).

    The reservation length is the requested time, at least one second (a job
    asking for 0 s still needs its resources for an instant). ``with_memory``
    False drops the memory request (a cluster that declares no memory).
    """
    if jobs.dtype != JOB_DTYPE:
        raise KernelInputError(f"expected a JOB_DTYPE table, got {jobs.dtype}")
    specs = np.zeros(len(jobs), dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = jobs["job_id"]
    specs["submit_s"] = jobs["submit_s"]
    specs["walltime_s"] = np.maximum(jobs["walltime_s"], 1)
    specs["n_tasks"] = jobs["n_tasks"]
    # users as dense indices (unknown stays -1): the kernel keeps usage per user
    users = jobs["user_id"]
    known = users >= 0
    dense = np.full(len(jobs), -1, dtype=np.int32)
    dense[known] = np.unique(users[known], return_inverse=True)[1]
    specs["user_idx"] = dense
    per_task = specs["per_task"]
    per_task[:, 0] = jobs["cores_per_task"]
    per_task[:, 1] = jobs["mem_mib_per_task"] if with_memory else 0
    per_task[:, 2] = jobs["gpus_per_task"]
    return specs


class Kernel:
    """One cluster state plus the policy knobs; one call per scheduling pass.

    Jobs are addressed by *slot* (``job_idx``), the position returned by
    ``add_jobs``; the source's job id is kept for tie-breaking and reports.
    The event methods are the compiled ones, bound once, so a driver's hot
    loop pays no extra Python call.
    """

    def __init__(self, capacity: np.ndarray, policy: Policy | None = None) -> None:
        capacity = np.ascontiguousarray(capacity, dtype=np.int64)
        if capacity.ndim != 2 or capacity.shape[1] != N_RESOURCES:
            raise KernelInputError(
                f"node capacity must have shape (n_nodes, {N_RESOURCES}), got {capacity.shape}"
            )
        if (capacity < 0).any():
            node = int(np.argwhere(capacity < 0)[0, 0])
            raise KernelInputError(f"node {node} has a negative capacity")
        self.capacity = capacity
        self.policy = policy or Policy()
        self._state = _core.ClusterState(capacity)
        self.configure(self.policy)
        self.submit = self._state.submit
        self.finish = self._state.finish
        self.cancel = self._state.cancel
        self.schedule = self._state.schedule
        self.started_jobs = self._state.started_jobs
        self.pending_jobs = self._state.pending_jobs
        self.start_times = self._state.start_times
        self.end_times = self._state.end_times
        self.reservations = self._state.reservations
        self.job_allocation = self._state.job_allocation

    def configure(self, policy: Policy) -> None:
        self.policy = policy
        self._state.configure(
            _core.ORDERS[policy.order],
            _core.BACKFILLS[policy.backfill],
            _core.PLACEMENTS[policy.placement],
            policy.backfill_depth,
        )
        self._state.set_user_limits(policy.max_running_jobs_per_user, policy.max_cores_per_user)

    @property
    def n_jobs(self) -> int:
        return int(self._state.n_jobs)

    @property
    def n_pending(self) -> int:
        return int(self._state.n_pending)

    @property
    def n_running(self) -> int:
        return int(self._state.n_running)

    @property
    def counters(self) -> dict[str, int]:
        """Passes run, full passes, jobs examined: how much work the policy did."""
        return {
            "passes": int(self._state.n_passes),
            "full_passes": int(self._state.n_full_passes),
            "jobs_examined": int(self._state.n_jobs_examined),
        }

    def add_jobs(self, specs: np.ndarray) -> int:
        """Register jobs (not yet submitted); returns the first slot index.

        Rejects, naming the job: no task, no core per task, a negative request,
        a walltime under one second, and a request no set of UP nodes could
        ever hold (more of a resource than the cluster has, or a task larger
        than every node).
        """
        if specs.dtype != JOB_SPEC_DTYPE:
            raise KernelInputError(f"expected JOB_SPEC_DTYPE, got {specs.dtype}")
        specs = np.ascontiguousarray(specs)
        self._validate(specs)
        return int(self._state.add_jobs(specs))

    def _validate(self, specs: np.ndarray) -> None:
        per_task = specs["per_task"]
        total = self.capacity.sum(axis=0)
        need = per_task * specs["n_tasks"][:, None]
        # (which jobs are bad, what is wrong, whether the request vs the cluster explains it)
        checks: list[tuple[np.ndarray, str, bool]] = [
            (specs["n_tasks"] < 1, "asks for no task (n_tasks < 1)", False),
            (per_task[:, 0] < 1, "asks for less than one core per task", False),
            (
                np.asarray((per_task < 0).any(axis=1)),
                "asks for a negative amount of a resource",
                False,
            ),
            (specs["walltime_s"] < 1, "has a walltime under one second", False),
            ((need > total).any(axis=1), "asks for more than the whole cluster has", True),
            (
                (per_task > self.capacity.max(axis=0)).any(axis=1),
                "has a task larger than every node",
                True,
            ),
        ]
        for bad, what, show_request in checks:
            if not bad.any():
                continue
            k = int(np.flatnonzero(bad)[0])
            detail = ""
            if show_request:
                request = dict(zip(RESOURCES, per_task[k].tolist(), strict=True))
                cluster = dict(zip(RESOURCES, total.tolist(), strict=True))
                detail = f" ({int(specs['n_tasks'][k])} tasks x {request}; cluster total {cluster})"
            raise KernelInputError(
                f"job {int(specs['job_id'][k])} {what}{detail}; "
                f"{int(bad.sum())} job(s) in this batch are affected"
            )

    def set_priorities(self, job_idx: np.ndarray, priority: np.ndarray) -> None:
        self._state.set_priorities(
            np.ascontiguousarray(job_idx, dtype=np.int32),
            np.ascontiguousarray(priority, dtype=np.float64),
        )

    def set_node_state(self, node_idx: int, state: NodeState) -> None:
        self._state.set_node_state(int(node_idx), int(state))

    def estimate_start(self, job_idx: int, now: int) -> int:
        """Estimated start time of a job from the reservation profile (NEVER: -1)."""
        return int(self._state.estimate_start(int(job_idx), int(now)))

    def why_pending(self, job_idx: int) -> Reason:
        return Reason(self._state.why_pending(int(job_idx)))

    def job_states(self) -> np.ndarray:
        return self._state.job_states()

    def free_per_node(self) -> np.ndarray:
        return self._state.free_per_node()

    def free_total(self) -> np.ndarray:
        return self._state.free_total()

    def node_states(self) -> np.ndarray:
        return self._state.states_of_nodes()

    def shadow(self) -> tuple[int, int | None, np.ndarray]:
        return self._state.shadow()


class ReplayFeed:
    """Arrivals and completions of a replay (see ``_core.ReplayFeed``).

    Slot k of the feed is slot k of the kernel: add the jobs to the kernel in
    submit order, starting from an empty kernel.
    """

    def __init__(self, kernel: Kernel, submit_s: np.ndarray, duration_s: np.ndarray) -> None:
        if kernel.n_jobs != len(submit_s):
            raise KernelInputError(
                f"the feed has {len(submit_s)} jobs but the kernel holds {kernel.n_jobs}"
            )
        if (np.asarray(duration_s) < 0).any():
            raise KernelInputError("a job duration is negative")
        self._feed = _core.ReplayFeed(
            np.ascontiguousarray(submit_s, dtype=np.int64),
            np.ascontiguousarray(duration_s, dtype=np.int64),
        )
        state = kernel._state
        feed = self._feed
        self.next_time = feed.next_time
        self._raw = (feed, state)

    def step(self, now: int) -> int:
        """Events due at ``now``, one pass, the started jobs' completions; the next time."""
        return int(self._feed.step(self._raw[1], now))

    @property
    def raw(self) -> tuple[object, object]:
        """(compiled feed, compiled state) for a driver's tightest loop."""
        return self._raw
