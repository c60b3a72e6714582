"""The Python face of the compiled kernel: the only importer of ``htcsim._core``.

It validates and coerces inputs at the boundary (dtypes, ranges, impossible
requests), then hands C arrays to the kernel; the hot loop never checks
anything again. Drivers (simulator, agent) use ``Kernel`` and ``ReplayFeed``
from here and nothing else of the compiled module. One idea, one module: it
mirrors every entry of the compiled kernel, so it grows with the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from htcsim import _core
from htcsim.model import JOB_DTYPE
from htcsim.policy import Policy

JOB_SPEC_DTYPE: np.dtype = _core.JOB_SPEC_DTYPE
"""One kernel job: derived from the C struct ``JobSpec`` (core/_core.pxd)."""

AvailabilityProfile = _core.AvailabilityProfile
"""Free resources over future time (the structure behind reservations and estimates)."""

QueueSnapshot = _core.QueueSnapshot
"""The queue copied for estimates off the scheduling loop (``Kernel.snapshot_queue``)."""

FACTOR_NAMES: tuple[str, ...] = tuple(_core.FACTOR_NAMES)
"""Columns of ``QueueSnapshot.factors``: the multifactor priority's terms."""

RESOURCES: tuple[str, ...] = tuple(_core.RESOURCE_NAMES)
N_RESOURCES: int = int(_core.N_RESOURCES)
NEVER = -1
"""Returned by estimates for a job that can never start on the current nodes."""

rlscheduler_window = _core.rlscheduler_window
"""The scheduling loop of RLScheduler's simulator, a compatibility profile (htcsim.compat)."""

swf_columns = _core.swf_columns
"""The SWF reader's fast path in C: plain data lines into number columns (htcsim.workload.swf)."""

SERIES_COLUMNS: tuple[str, ...] = tuple(_core.SERIES_COLUMNS)
"""Columns of the replay's recorded time series (ReplayFeed.series)."""

JobState = IntEnum("JobState", {k.upper(): v for k, v in _core.JOB_STATES.items()})  # type: ignore[misc]
Reason = IntEnum("Reason", dict(_core.REASONS))  # type: ignore[misc]
NodeState = IntEnum("NodeState", {k.upper(): v for k, v in _core.NODE_STATES.items()})  # type: ignore[misc]


class KernelInputError(ValueError):
    """A job or node table handed to the kernel is invalid; names the job or node.

    For a job batch, ``row`` is the position of the first bad job and
    ``resource`` the resource its request exceeds (None when the request is
    not too big but malformed), so a caller can word its own message.
    """

    def __init__(self, message: str, *, row: int | None = None, resource: str | None = None):
        super().__init__(message)
        self.row = row
        self.resource = resource


def node_capacity(
    n_nodes: int, cores: int, mem_mib: int = 0, gpus: int = 0, scratch_mib: int = 0
) -> np.ndarray:
    """A capacity table of ``n_nodes`` identical nodes, shape (n_nodes, N_RESOURCES)."""
    if n_nodes <= 0 or cores <= 0:
        raise KernelInputError(f"need at least one node with one core, got {n_nodes}x{cores}")
    table = np.empty((n_nodes, N_RESOURCES), dtype=np.int64)
    table[:] = (cores, mem_mib, gpus, scratch_mib)
    return table


def dense_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense index per row, -1 where unknown; the sorted distinct known ids).

    Row k's entity is ``distinct[dense[k]]``: the kernel keeps usage and
    limits per dense index; a policy names entities by their ids.

    Ids are small numbers in every log (SWF numbers its users and groups from
    1): when the largest is not much more than the rows, a table indexed by id
    maps them in linear time instead of sorting (``np.unique`` sorts the
    column, about 60 ms for HPC2N's 200,000 jobs, and a replay needs four).
    """
    ids = np.asarray(ids)
    known = ids >= 0
    dense = np.full(len(ids), -1, dtype=np.int32)
    present = ids[known]
    top = int(present.max()) if present.size else -1
    if np.issubdtype(ids.dtype, np.integer) and top < 4 * len(ids) + 1024:
        seen = np.zeros(top + 1, dtype=bool)
        seen[present] = True
        distinct = np.flatnonzero(seen).astype(ids.dtype, copy=False)
        rank = np.cumsum(seen, dtype=np.int32) - 1
        dense[known] = rank[present]
        return dense, distinct
    distinct, inverse = np.unique(present, return_inverse=True)
    dense[known] = inverse
    return dense, distinct


def job_specs(
    jobs: np.ndarray, *, with_memory: bool = True, policy: Policy | None = None
) -> np.ndarray:
    """Kernel job specs from a workload table (``htcsim.model.JOB_DTYPE``).

    The reservation length is the requested time, 0 included: a job asking
    for 0 s (an SWF job that ran 0 s and requested nothing) takes no time slot
    in the availability profile, though it still needs its resources free at
    the instant it starts, and ends at that instant. ``with_memory``
    False drops the memory request (a cluster that declares no memory).
    Users and groups become dense indices (``dense_ids``); the queue number
    becomes the index of the policy's QoS that lists it (-1: none).
    """
    if jobs.dtype != JOB_DTYPE:
        raise KernelInputError(f"expected a JOB_DTYPE table, got {jobs.dtype}")
    specs = np.zeros(len(jobs), dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = jobs["job_id"]
    specs["submit_s"] = jobs["submit_s"]
    specs["walltime_s"] = jobs["walltime_s"]
    specs["n_tasks"] = jobs["n_tasks"]
    specs["user_idx"] = dense_ids(jobs["user_id"])[0]
    specs["group_idx"] = dense_ids(jobs["group_id"])[0]
    specs["qos_idx"] = -1
    for index, qos in enumerate(policy.qos if policy is not None else ()):
        if qos.queues:
            specs["qos_idx"][np.isin(jobs["queue_id"], qos.queues)] = index
    per_task = specs["per_task"]
    per_task[:, 0] = jobs["cores_per_task"]
    per_task[:, 1] = jobs["mem_mib_per_task"] if with_memory else 0
    per_task[:, 2] = jobs["gpus_per_task"]
    return specs


_FEW = 8
"""Batches up to this many jobs are checked in plain Python first (``Kernel._few_fit``)."""


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
        self.node_part = np.zeros(len(capacity), dtype=np.int32)
        self._reservations: list[tuple[int, int, np.ndarray]] = []
        self._part_bounds()
        self._dep_child = np.empty(0, dtype=np.int32)
        self._dep_parent = np.empty(0, dtype=np.int32)
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
        self.dependency_cancelled = self._state.dependency_cancelled
        self.priorities = self._state.priorities
        self.next_wakeup = self._state.next_wakeup
        self.state_code = self._state.state_of  # state_of as a plain int, for per-step checks

    def configure(self, policy: Policy) -> None:
        """Apply every knob of ``policy`` that does not name a user or group."""
        self.policy = policy
        state = self._state
        state.configure(
            _core.ORDERS[policy.order],
            _core.BACKFILLS[policy.backfill],
            _core.PLACEMENTS[policy.placement],
            policy.backfill_depth,
        )
        state.set_limits(0, np.array(policy.limits_of("user"), dtype=np.int64))
        state.set_limits(1, np.array(policy.limits_of("group"), dtype=np.int64))
        top = max((q.priority for q in policy.qos), default=0.0)
        state.set_qos(
            np.array([q.priority / top if top > 0 else 0.0 for q in policy.qos], dtype=np.float64),
            np.array([q.limits for q in policy.qos], dtype=np.int64).reshape(-1, 4),
        )
        state.set_priority(
            policy.priority_weight_age,
            policy.priority_weight_size,
            policy.priority_weight_fairshare,
            policy.priority_weight_qos,
            policy.priority_max_age_s,
            policy.priority_favor == "small",
            policy.priority_interval_s,
        )
        state.set_starvation_limit(policy.starvation_limit_s)
        state.configure_failures(_core.FAIL_MODES[policy.on_node_failure], policy.max_retries or -1)

    def set_node_types(self, node_type: np.ndarray, price_per_hour: np.ndarray) -> None:
        """Node n is of type node_type[n] (contiguous runs, identical capacity);
        a provisioned node of type t costs price_per_hour[t]."""
        self._state.set_node_types(
            np.ascontiguousarray(node_type, dtype=np.int32),
            np.ascontiguousarray(price_per_hour, dtype=np.float64),
        )

    def configure_autoscale(
        self, bounds: list[tuple[int, int]], policy: Policy, now: int = 0, *, live: bool = False
    ) -> None:
        """Let the kernel's autoscaler manage every node type, (min, max) nodes
        each (max at most the type's count: its pool); the timing knobs come
        from the policy. Nodes beyond each min are OFF from ``now``. ``live``:
        a booted node is BOOTING until the agent sets it UP (its worker
        joined), not for the policy's simulated boot delay."""
        low = np.array([b[0] for b in bounds], dtype=np.int32)
        high = np.array([b[1] for b in bounds], dtype=np.int32)
        try:
            self._state.configure_autoscale(
                np.ones(len(bounds), dtype=np.int8),
                low,
                high,
                policy.autoscale_wait_s,
                policy.autoscale_idle_s,
                policy.autoscale_boot_delay_s,
                policy.autoscale_cooldown_s,
                policy.autoscale_step,
                now,
                policy.autoscale_interval_s,
                live,
            )
        except ValueError as exc:
            raise KernelInputError(f"autoscale: {exc}") from exc

    def autoscale(self, now: int) -> tuple[np.ndarray, np.ndarray]:
        """One autoscaler decision after a pass: (nodes booted, nodes powered off)."""
        return self._state.autoscale(int(now))

    def complete_boots(self, now: int) -> None:
        self._state.complete_boots(int(now))

    def drain_node(self, node_idx: int, now: int) -> NodeState:
        """No new work on the node; it goes OFF when its last job ends."""
        return NodeState(self._state.drain_node(int(node_idx), int(now)))

    def start_clock(self, t0: int) -> None:
        """Provisioned time (cost) and idle time count from ``t0``."""
        self._state.start_clock(int(t0))

    def node_seconds(self, now: int) -> np.ndarray:
        """Seconds each node has been provisioned (not OFF) up to ``now``."""
        return self._state.node_seconds(int(now))

    def node_counts(self) -> dict[str, int]:
        """Nodes per lifecycle state: idle, allocated, booting, draining, down, off."""
        return self._state.node_counts()

    def set_checkpoints(self, job_idx: np.ndarray, interval_s: np.ndarray) -> None:
        """Jobs that checkpoint every ``interval_s`` seconds of run (0: never):
        after a node failure they restart from their last checkpoint."""
        self._state.set_checkpoints(
            np.ascontiguousarray(job_idx, dtype=np.int32),
            np.ascontiguousarray(interval_s, dtype=np.int64),
        )

    def checkpoint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(run seconds saved by checkpoints, ended by a node failure) per slot."""
        return self._state.checkpoint_state()

    def set_accounts(self, user_ids: np.ndarray, group_ids: np.ndarray) -> None:
        """Name the dense users and groups (``dense_ids``) so that the policy's
        shares and nice values reach them; names the policy gives that the
        workload does not have are ignored (a policy serves many workloads)."""
        self.set_account_names([str(int(u)) for u in user_ids], [str(int(g)) for g in group_ids])

    def set_account_names(self, users: Sequence[str], groups: Sequence[str]) -> None:
        """Dense user k is ``users[k]``, dense group k ``groups[k]``: the policy's
        shares and nice values reach them by name (the agent's users are names)."""
        policy = self.policy
        user_names = {name: k for k, name in enumerate(users)}
        group_names = {name: k for k, name in enumerate(groups)}
        user_share = np.ones(len(users), dtype=np.float64)
        group_share = np.ones(len(groups), dtype=np.float64)
        nice = np.zeros(len(users), dtype=np.float64)
        for name, value in policy.user_shares:
            if name in user_names:
                user_share[user_names[name]] = value
        for name, value in policy.group_shares:
            if name in group_names:
                group_share[group_names[name]] = value
        for name, value in policy.nice:
            if name in user_names:
                nice[user_names[name]] = value
        self._state.set_fairshare(
            _core.FAIRSHARE_ALGORITHMS[policy.fairshare_algorithm],
            float(policy.fairshare_half_life_s),
            user_share,
            group_share,
        )
        self._state.set_nice(nice)

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
    def n_passes(self) -> int:
        """Scheduling passes run so far (every ``schedule`` call is one)."""
        return int(self._state.n_passes)

    @property
    def n_started(self) -> int:
        """Jobs the last pass started (``started_jobs()`` holds them)."""
        return int(self._state.n_started)

    @property
    def n_recomputes(self) -> int:
        """Multifactor priority recomputations so far (each one at a pass)."""
        return int(self._state.n_recomputes)

    @property
    def counters(self) -> dict[str, int]:
        """Passes run, full passes, jobs examined: how much work the policy did."""
        return {
            "passes": int(self._state.n_passes),
            "full_passes": int(self._state.n_full_passes),
            "jobs_examined": int(self._state.n_jobs_examined),
            "node_boots": int(self._state.n_boots),
            "node_shutdowns": int(self._state.n_shutdowns),
        }

    def add_jobs(self, specs: np.ndarray, *, checked: bool = False) -> int:
        """Register jobs (not yet submitted); returns the first slot index.

        Rejects, naming the job: no task, no core per task, a negative request,
        a negative walltime, and a request no set of UP nodes could
        ever hold (more of a resource than the cluster has, or a task larger
        than every node). ``checked``: the caller has just passed these specs
        through ``check_jobs`` (the live agent checks before it stores a job,
        then adds it): they are not checked twice.
        """
        if specs.dtype != JOB_SPEC_DTYPE:
            raise KernelInputError(f"expected JOB_SPEC_DTYPE, got {specs.dtype}")
        specs = np.ascontiguousarray(specs)
        if not checked:
            self.check_jobs(specs)
        return int(self._state.add_jobs(specs))

    def set_partitions(self, node_part: np.ndarray) -> None:
        """Disjoint partitions: node n belongs to partition ``node_part[n]``; a job
        runs only on its partition's nodes (``part_idx``), and each partition is
        scheduled as a machine of its own. Before any job is added."""
        node_part = np.ascontiguousarray(node_part, dtype=np.int32)
        if self.n_jobs:
            raise KernelInputError("partitions are set before any job is added")
        self._state.set_partitions(node_part)
        self.node_part = node_part
        self._part_bounds()

    def _part_bounds(self) -> None:
        """Each partition's total and largest node per resource, which ``check_jobs``
        compares requests with: computed when the partitions are set (a kernel's
        capacity is fixed for its life), not for every batch of jobs."""
        n_part = int(self.node_part.max()) + 1 if len(self.node_part) else 1
        nodes = [self.capacity[self.node_part == p] for p in range(n_part)]
        self._n_part = n_part
        self._part_total = np.stack([n.sum(axis=0) for n in nodes])
        self._part_max = np.stack(
            [n.max(axis=0) if len(n) else np.zeros(N_RESOURCES, np.int64) for n in nodes]
        )
        self._part_bounds_list = list(
            zip(self._part_total.tolist(), self._part_max.tolist(), strict=True)
        )

    def check_jobs(self, specs: np.ndarray) -> None:
        """Raise ``KernelInputError`` (naming the first bad row) for specs ``add_jobs``
        would refuse."""
        if len(specs) <= _FEW and self._few_fit(specs):
            return
        per_task = specs["per_task"]
        n_part = self._n_part
        part = specs["part_idx"]
        bad_part = (part < 0) | (part >= n_part)
        if bad_part.any():
            k = int(np.flatnonzero(bad_part)[0])
            raise KernelInputError(
                f"job {int(specs['job_id'][k])} names partition {int(part[k])}, "
                f"but the cluster has {n_part}"
            )
        total = self._part_total[part]
        biggest = self._part_max[part]
        need = per_task * specs["n_tasks"][:, None]
        # (which jobs are bad, what is wrong, the per-resource excess when the request
        # vs the cluster explains it)
        too_much = need > total
        too_big = per_task > biggest
        checks: list[tuple[np.ndarray, str, np.ndarray | None]] = [
            (specs["n_tasks"] < 1, "asks for no task (n_tasks < 1)", None),
            (per_task[:, 0] < 1, "asks for less than one core per task", None),
            (
                np.asarray((per_task < 0).any(axis=1)),
                "asks for a negative amount of a resource",
                None,
            ),
            (specs["walltime_s"] < 0, "has a negative walltime", None),
            (
                np.asarray(too_much.any(axis=1)),
                "asks for more than the whole cluster has"
                if n_part == 1
                else "asks for more than its partition has",
                too_much,
            ),
            (np.asarray(too_big.any(axis=1)), "has a task larger than every node", too_big),
        ]
        for bad, what, excess in checks:
            if not bad.any():
                continue
            k = int(np.flatnonzero(bad)[0])
            detail = ""
            resource = None
            if excess is not None:
                resource = RESOURCES[int(np.flatnonzero(excess[k])[0])]
                request = dict(zip(RESOURCES, per_task[k].tolist(), strict=True))
                cluster = dict(zip(RESOURCES, total[k].tolist(), strict=True))
                where = "cluster" if n_part == 1 else f"partition {int(part[k])}"
                detail = f" ({int(specs['n_tasks'][k])} tasks x {request}; {where} total {cluster})"
            raise KernelInputError(
                f"job {int(specs['job_id'][k])} {what}{detail}; "
                f"{int(bad.sum())} job(s) in this batch are affected",
                row=k,
                resource=resource,
            )

    def _few_fit(self, specs: np.ndarray) -> bool:
        """Whether every row of a small batch passes ``check_jobs``, in plain Python:
        for one job (a live submission) a dozen NumPy calls on one-row arrays cost
        more than the comparisons. False sends the batch to the NumPy checks,
        which word the refusal."""
        bounds = self._part_bounds_list
        for n_tasks, per_task, walltime, part in zip(
            specs["n_tasks"].tolist(),
            specs["per_task"].tolist(),
            specs["walltime_s"].tolist(),
            specs["part_idx"].tolist(),
            strict=True,
        ):
            if not 0 <= part < len(bounds) or n_tasks < 1 or walltime < 0 or per_task[0] < 1:
                return False
            total, biggest = bounds[part]
            for asked, whole, largest in zip(per_task, total, biggest, strict=True):
                if asked < 0 or asked * n_tasks > whole or asked > largest:
                    return False
        return True

    def set_priorities(self, job_idx: np.ndarray, priority: np.ndarray) -> None:
        self._state.set_priorities(
            np.ascontiguousarray(job_idx, dtype=np.int32),
            np.ascontiguousarray(priority, dtype=np.float64),
        )

    def add_dependencies(
        self,
        child: np.ndarray,
        parent: np.ndarray,
        kind: np.ndarray | str = "afterany",
        delay_s: np.ndarray | int = 0,
    ) -> None:
        """Child slots wait for parent slots (afterany, afterok, afternotok), then
        ``delay_s`` of think time. Rejects, naming the jobs, a slot out of
        range, a dependency on itself and any cycle."""
        child = np.ascontiguousarray(child, dtype=np.int32)
        parent = np.ascontiguousarray(parent, dtype=np.int32)
        n = len(child)
        if isinstance(kind, str):
            if kind not in DEPENDENCY_KINDS:
                raise KernelInputError(
                    f"unknown dependency kind {kind!r} (known: {', '.join(DEPENDENCY_KINDS)})"
                )
            kinds = np.full(n, DEPENDENCY_KINDS[kind], dtype=np.int32)
        else:
            kinds = np.ascontiguousarray(kind, dtype=np.int32)
        delays = np.ascontiguousarray(np.broadcast_to(delay_s, (n,)), dtype=np.int64)
        bad = (child < 0) | (child >= self.n_jobs) | (parent < 0) | (parent >= self.n_jobs)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise KernelInputError(
                f"dependency {int(child[k])} -> {int(parent[k])} names an unknown job slot"
            )
        if (delays < 0).any():
            k = int(np.flatnonzero(delays < 0)[0])
            raise KernelInputError(f"job slot {int(child[k])} has a negative think time")
        # a cycle may close through edges of earlier calls: check them all together
        all_child = np.concatenate([self._dep_child, child])
        all_parent = np.concatenate([self._dep_parent, parent])
        check_acyclic(all_child, all_parent, self.n_jobs)
        self._state.add_dependencies(child, parent, kinds, delays)
        self._dep_child, self._dep_parent = all_child, all_parent

    def hold(self, job_idx: int) -> None:
        self._state.hold(int(job_idx))

    def release(self, job_idx: int, now: int) -> None:
        self._state.release(int(job_idx), int(now))

    def add_reservation(
        self, start_s: int, end_s: int, nodes: np.ndarray, owner: str, owner_idx: int
    ) -> int:
        """Reserve ``nodes`` (indices) over [start_s, end_s) for a user, group or QoS.

        Two reservations may share a node only if their windows do not
        overlap (as Slurm's reservations without the overlap flag): a node is
        held for one owner at a time, which is what the availability profile
        counts.
        """
        flags = np.zeros(len(self.capacity), dtype=np.int8)
        flags[np.asarray(nodes, dtype=np.int64)] = 1
        if owner not in _core.LEVELS:
            raise KernelInputError(f"a reservation's owner is a user, group or qos, not {owner!r}")
        for k, (start, end, other) in enumerate(self._reservations):
            shared = np.flatnonzero(flags & other)
            if len(shared) and start < end_s and start_s < end:
                raise KernelInputError(
                    f"reservation over [{start_s}, {end_s}) overlaps reservation {k} "
                    f"[{start}, {end}) on node {int(shared[0])}"
                )
        index = int(
            self._state.add_reservation(
                int(start_s), int(end_s), flags, _core.LEVELS[owner], int(owner_idx)
            )
        )
        self._reservations.append((int(start_s), int(end_s), flags))
        return index

    def set_priority_phase(self, phase_s: int) -> None:
        """Recompute the multifactor priorities at the first pass at or after
        each ``phase_s + k * interval_s`` (Slurm's PriorityCalcPeriod clock,
        see ``_core.ClusterState.set_priority_phase``); -1: ``interval_s`` after
        the last recomputation (the default)."""
        try:
            self._state.set_priority_phase(int(phase_s))
        except ValueError as exc:
            raise KernelInputError(str(exc)) from None

    def recompute_priorities(self, now: int) -> None:
        """Usage, fairshare and every pending priority brought to ``now`` (multifactor)."""
        self._state.recompute_priorities(int(now))

    def priority_factors(self, job_idx: int, now: int) -> tuple[float, dict[str, float]]:
        """(priority, normalized factors) of a job at ``now`` (see ``explain``)."""
        priority, factors = self._state.priority_factors(int(job_idx), int(now))
        return float(priority), dict(factors)

    def fairshare_usage(self) -> tuple[np.ndarray, np.ndarray]:
        return self._state.fairshare_usage()

    def usage(self, level: str) -> np.ndarray:
        """Running jobs, cores and GPUs held now per user, group or qos (dense index)."""
        return self._state.usage(_core.LEVELS[level])

    def fail_node(self, node_idx: int, now: int) -> np.ndarray:
        """The node goes down; the jobs on it are requeued from their last
        checkpoint, or end failed (policy ``on_node_failure``, ``max_retries``);
        the slots hit are returned."""
        return self._state.fail_node(int(node_idx), int(now))

    def requeue_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(times requeued, run seconds lost) per slot."""
        return self._state.requeue_counts()

    def adopt(self, job_idx: int, start_s: int, nodes: np.ndarray, tasks: np.ndarray) -> None:
        """A job a restarted driver finds running: it holds ``tasks[k]`` tasks on
        node ``nodes[k]`` since ``start_s`` (the job is added, never submitted)."""
        try:
            self._state.adopt(
                int(job_idx),
                int(start_s),
                np.ascontiguousarray(nodes, dtype=np.int32),
                np.ascontiguousarray(tasks, dtype=np.int32),
            )
        except ValueError as exc:
            raise KernelInputError(str(exc)) from exc

    def set_node_state(self, node_idx: int, state: NodeState, now: int = -1) -> None:
        self._state.set_node_state(int(node_idx), int(state), int(now))

    def estimate_start(self, job_idx: int, now: int) -> int:
        """Estimated start time of a job from the reservation profile (NEVER: -1).

        O(queue ahead of it) per call: for many jobs, ``snapshot_queue``."""
        return int(self._state.estimate_start(int(job_idx), int(now)))

    def snapshot_queue(self, now: int) -> QueueSnapshot:
        """The pending and held jobs' reasons and priorities at ``now``, and a copy
        of what their start estimates need, in one O(queue + running) step.

        Call it under the lock that guards this kernel; the snapshot's
        ``estimate_starts()`` then needs no lock (it reads only the copy, with
        the GIL released), so a driver keeps scheduling while it runs. Its
        answers are those of ``estimate_start``, ``why_pending`` and
        ``priority_factors`` for each job at ``now``."""
        return QueueSnapshot(self._state, int(now))

    def why_pending(self, job_idx: int) -> Reason:
        return Reason(self._state.why_pending(int(job_idx)))

    def state_of(self, job_idx: int) -> JobState:
        return JobState(self._state.state_of(int(job_idx)))

    def job_states(self) -> np.ndarray:
        return self._state.job_states()

    def tasks_per_node(self) -> np.ndarray:
        """Tasks placed on each node (a copy): which nodes a failure would hit."""
        return self._state.tasks_per_node()

    def free_per_node(self) -> np.ndarray:
        return self._state.free_per_node()

    def free_total(self) -> np.ndarray:
        return self._state.free_total()

    def node_states(self) -> np.ndarray:
        return self._state.states_of_nodes()

    def shadow(self) -> tuple[int, int | None, np.ndarray]:
        return self._state.shadow()


DEPENDENCY_KINDS: dict[str, int] = dict(_core.DEPENDENCY_KINDS)


def check_acyclic(child: np.ndarray, parent: np.ndarray, n_jobs: int) -> None:
    """Reject a dependency cycle, naming the jobs in it (strongly connected
    components of the dependency graph, computed by SciPy)."""
    if len(child) == 0:
        return
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    loops = child == parent
    if loops.any():
        raise KernelInputError(f"job slot {int(child[loops][0])} depends on itself")
    graph = coo_matrix(
        (np.ones(len(child), dtype=np.int8), (parent, child)), shape=(n_jobs, n_jobs)
    ).tocsr()
    n_comp, labels = connected_components(graph, directed=True, connection="strong")
    if n_comp == n_jobs:
        return
    sizes = np.bincount(labels)
    members = np.flatnonzero(labels == int(np.argmax(sizes)))
    shown = ", ".join(str(int(m)) for m in members[:10])
    more = "" if len(members) <= 10 else f" (and {len(members) - 10} more)"
    raise KernelInputError(f"dependency cycle between job slots {shown}{more}")


class FitCheck(NamedTuple):
    """What ``fit_check`` finds, one row per job and one column per resource (RESOURCES)."""

    too_much: np.ndarray
    """The job needs more in all than its partition (or the cluster) has."""
    too_big: np.ndarray
    """One task of the job needs more than every node of its partition has."""
    total: np.ndarray
    """What the job's partition has in all."""
    biggest: np.ndarray
    """The most one node of the job's partition has."""

    @property
    def unplaceable(self) -> np.ndarray:
        """True for a job no set of UP nodes could ever hold."""
        return np.asarray((self.too_much | self.too_big).any(axis=1))


def fit_check(capacity: np.ndarray, node_part: np.ndarray, specs: np.ndarray) -> FitCheck:
    """Which jobs (JOB_SPEC_DTYPE, ``part_idx`` valid) the nodes could never hold.

    The check ``Kernel.add_jobs`` refuses a batch by; a driver calls it first
    to leave such jobs out instead (``htcsim simulate --skip-oversized``).
    """
    n_part = int(node_part.max()) + 1 if len(node_part) else 1
    part_total = np.stack([capacity[node_part == p].sum(axis=0) for p in range(n_part)])
    part_max = np.stack([capacity[node_part == p].max(axis=0) for p in range(n_part)])
    part = specs["part_idx"]
    per_task = specs["per_task"]
    total = part_total[part]
    biggest = part_max[part]
    need = per_task * specs["n_tasks"][:, None]
    return FitCheck(need > total, per_task > biggest, total, biggest)


class ReplayFeed:
    """Arrivals and completions of a replay (see ``_core.ReplayFeed``).

    Slot k of the feed is slot k of the kernel: add the jobs to the kernel in
    submit order, starting from an empty kernel.
    """

    def __init__(
        self,
        kernel: Kernel,
        submit_s: np.ndarray,
        duration_s: np.ndarray,
        ok: np.ndarray | None = None,
    ) -> None:
        if kernel.n_jobs != len(submit_s):
            raise KernelInputError(
                f"the feed has {len(submit_s)} jobs but the kernel holds {kernel.n_jobs}"
            )
        if (np.asarray(duration_s) < 0).any():
            raise KernelInputError("a job duration is negative")
        self._feed = _core.ReplayFeed(
            np.ascontiguousarray(submit_s, dtype=np.int64),
            np.ascontiguousarray(duration_s, dtype=np.int64),
            None if ok is None else np.ascontiguousarray(ok, dtype=np.int8),
        )
        state = kernel._state
        feed = self._feed
        self.next_time = feed.next_time
        self._raw = (feed, state)

    def set_node_events(
        self,
        t: np.ndarray,
        failing: np.ndarray,
        node: np.ndarray,
        repair_s: np.ndarray,
        n_nodes: int,
    ) -> None:
        """Node failures and repairs the feed applies before each step (see
        ``_core.ReplayFeed.set_node_events``)."""
        self._feed.set_node_events(
            np.ascontiguousarray(t, dtype=np.int64),
            np.ascontiguousarray(failing, dtype=np.int8),
            np.ascontiguousarray(node, dtype=np.int32),
            np.ascontiguousarray(repair_s, dtype=np.int64),
            int(n_nodes),
        )

    def set_slurm_compat(self, reaction_s: int, backfill_interval_s: int) -> None:
        """Time the passes as Slurm does (see ``_core.ReplayFeed.set_slurm_compat``):
        each pass ``reaction_s`` after the event it serves, backfill only at
        multiples of ``backfill_interval_s``."""
        if reaction_s < 0 or backfill_interval_s < 0:
            raise KernelInputError("reaction_s and backfill_interval_s must be >= 0")
        self._feed.set_slurm_compat(int(reaction_s), int(backfill_interval_s))

    def record_series(self, every_s: int = 0) -> None:
        """Record the state after each step (at most one row per ``every_s``)."""
        self._feed.series_dt = int(every_s)

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """(one array per SERIES_COLUMNS entry, stacked, and the price per hour of
        the provisioned nodes), one entry per recorded step."""
        return self._feed.series()

    def step(self, now: int) -> int:
        """Events due at ``now``, one pass, the started jobs' completions; the next time."""
        return int(self._feed.step(self._raw[1], now))

    @property
    def raw(self) -> tuple[object, object]:
        """(compiled feed, compiled state) for a driver's tightest loop."""
        return self._raw
