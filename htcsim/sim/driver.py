"""Replay a workload under a policy: SimPy supplies the clock, the kernel decides.

One SimPy process steps from one distinct event time to the next. At each
time it applies every completion due, then every arrival, then runs one
scheduling pass, then schedules the completions of the jobs just started
(the simulator knows their actual run times; the kernel does not). Events at
the same instant are therefore batched, as a real scheduler sees them, and
the same input gives the same schedule, bit for bit.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

import numpy as np
import polars as pl
import simpy

from htcsim.cluster import Cluster
from htcsim.kernel import (
    SERIES_COLUMNS,
    Kernel,
    KernelInputError,
    Reason,
    ReplayFeed,
    dense_ids,
    job_specs,
)
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.schedule import ESTIMATE_DTYPE, SimResult, killed_at_walltime
from htcsim.sim.failures import FAILURE_DTYPE
from htcsim.sim.interruptions import NO_MARK, InterruptionRecorder
from htcsim.sim.slurm_compat import clock_priorities, slurm_jobs, time_passes

ProgressCallback = Callable[[int], None]
"""Called now and then with the number of events applied so far."""

PROGRESS_EVERY_STEPS = 1 << 13
WAITING = (Reason["Resources"], Reason["Priority"])


class BeforeStep(Protocol):
    """Work the driver does before some steps (the interruption recorder)."""

    def first_mark(self) -> int:
        """The time of the first step to run before."""
        ...

    def __call__(self, now: int) -> int:
        """Run before the step at ``now``; the time of the next step to run before."""
        ...


def simulate(
    workload: Workload,
    policy: Policy | None = None,
    *,
    priority: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    cluster: Cluster | None = None,
    estimate_sample: int = 0,
    failures: np.ndarray | None = None,
    checkpoint_s: int | np.ndarray = 0,
    series_every_s: int | None = 0,
) -> SimResult:
    """Replay ``workload`` under ``policy`` and return the schedule.

    ``priority`` (one value per job, larger first) is required by the
    ``priority`` queue order and ignored otherwise. ``cluster`` replaces the
    workload's machine (identical nodes) by the node types of a cluster file.
    ``estimate_sample`` N > 0 asks the kernel, for every N-th job still pending
    after the pass at its submit time, when it expects the job to start: the
    result's ``estimates`` then calibrate the estimate against the real start.
    Decisions are the same with or without sampling.
    ``failures`` (FAILURE_DTYPE rows) fail nodes; ``checkpoint_s`` (one
    interval for every job, or one per job; 0: none) lets a requeued job
    restart from its last checkpoint. The result's ``segments`` then hold
    every run of every job, those the failures cut short included. With the
    policy's ``[autoscale]`` the node pool is each type's max and the
    kernel's autoscaler runs after every pass. ``series_every_s`` records the
    kernel's state (queue, nodes by state, cost rate) after each step at
    least that far apart (None: not at all).
    """
    replay = ReplaySetup(workload, policy or Policy(), priority, cluster, failures, checkpoint_s)
    kernel, feed = replay.kernel, replay.feed
    if series_every_s is not None:
        feed.record_series(series_every_s)
    sampler = _EstimateSampler(feed, kernel, estimate_sample) if estimate_sample > 0 else None
    recorder = (
        InterruptionRecorder(kernel, replay.failures, replay.checkpoint_s)
        if replay.failures is not None
        else None
    )
    env = simpy.Environment(initial_time=replay.t0)
    elapsed = run_replay(env, feed, progress, sampler, recorder)
    if recorder is not None:
        recorder.finish()
    return _result(workload, replay, int(env.now), elapsed, sampler, recorder, series_every_s)


def _result(
    workload: Workload,
    replay: ReplaySetup,
    end_time: int,
    elapsed: float,
    sampler: _EstimateSampler | None,
    recorder: InterruptionRecorder | None,
    series_every_s: int | None,
) -> SimResult:
    """What the kernel holds at the end of the replay, as a schedule."""
    kernel = replay.kernel
    start_s = kernel.start_times()
    end_s = kernel.end_times()
    end_s[start_s < 0] = -1  # a cancelled job never ran: no end either
    requeues, lost_s = kernel.requeue_counts()
    saved_s, node_failed = kernel.checkpoint_state()
    node_failed = node_failed.astype(bool)
    segments = None
    if recorder is not None:
        segments = recorder.segments(
            start_s,
            end_s,
            node_failed=node_failed,
            timed_out=killed_at_walltime(workload.jobs, start_s, end_s, saved_s, node_failed),
            lost_s=lost_s,
            saved_s=saved_s,
        )
    node_seconds = kernel.node_seconds(end_time)
    series = None if series_every_s is None else _node_series(replay.feed)
    pool = replay.pool
    if replay.pooled:
        # Reports speak of the log's machine: each of its one-core nodes was
        # provisioned as long as the pool, and was allocated while its core was.
        pool = node_pool(workload, kernel.policy, replay.cluster)
        node_seconds = np.full(pool.n_nodes, node_seconds[0], dtype=np.int64)
        if series is not None:
            series = series.with_columns(
                nodes_allocated=pl.col("used_cores"),
                nodes_idle=pl.col("up_cores") - pl.col("used_cores"),
            )
    return SimResult(
        workload=workload,
        policy=kernel.policy,
        start_s=start_s,
        end_s=end_s,
        cancelled=kernel.dependency_cancelled().astype(bool),
        replay_seconds=elapsed,
        counters=kernel.counters,
        cluster=replay.cluster,
        estimates=None if sampler is None else np.array(sampler.samples, dtype=ESTIMATE_DTYPE),
        requeues=requeues,
        lost_s=lost_s,
        saved_s=saved_s,
        node_failed=node_failed,
        pool=pool,
        node_seconds=node_seconds,
        node_series=series,
        segments=segments,
        failures=replay.failures,
        checkpoint_s=replay.checkpoint_s if replay.checkpoint_s.any() else None,
    )


def pool_replay(
    workload: Workload, policy: Policy, cluster: Cluster | None, failures: np.ndarray | None
) -> bool:
    """Can the kernel hold the log's machine as one node of all its cores?

    A log's machine whose processors are one-core nodes (every SWF log whose
    node count does not divide its processors, and every generated machine)
    runs one-core tasks, and one-core tasks on identical one-core nodes are a
    pool of processors: placement never changes a decision, so the kernel can
    hold one node of every core and a start no longer walks nodes (93,312 of
    them for CEA-Curie). Node identity matters when nodes fail (a failure
    trace names nodes; generated failures are per node) or are autoscaled,
    and a job with a task of more than one core must still be refused as
    larger than every node: those replays keep one node per processor.
    """
    machine = workload.machine
    return (
        cluster is None
        and machine.cores_per_node == 1
        and machine.n_nodes > 1
        and not policy.autoscale
        and (failures is None or len(failures) == 0)
        and bool((workload.jobs["cores_per_task"] == 1).all())
    )


class ReplaySetup:
    """Everything a replay is set up with, shared by ``simulate`` and
    ``explain`` so that both replay the same thing: the kernel and its feed
    (policy, nodes, autoscaler), the checkpoints and the node failures."""

    def __init__(
        self,
        workload: Workload,
        policy: Policy,
        priority: np.ndarray | None,
        cluster: Cluster | None,
        failures: np.ndarray | None,
        checkpoint_s: int | np.ndarray,
    ) -> None:
        self.pooled = pool_replay(workload, policy, cluster, failures)
        self.kernel, self.feed, self.pool = _prepare(
            workload, policy, priority, cluster, self.pooled
        )
        self.cluster = cluster
        jobs = workload.jobs
        self.t0 = int(jobs["submit_s"][0]) if len(jobs) else 0
        interval = np.broadcast_to(np.asarray(checkpoint_s, dtype=np.int64), len(jobs))
        if (interval < 0).any():
            raise KernelInputError("checkpoint intervals must be >= 0 seconds")
        self.checkpoint_s = np.ascontiguousarray(interval)
        if self.checkpoint_s.any():
            self.kernel.set_checkpoints(np.arange(len(interval), dtype=np.int32), self.checkpoint_s)
        self.failures: np.ndarray | None = None
        if failures is not None and len(failures):
            self.failures = _set_node_failures(self.feed, self.kernel, failures)


def node_pool(workload: Workload, policy: Policy, cluster: Cluster | None) -> Cluster:
    """The nodes the kernel holds: the cluster, each type resized to its
    autoscaling max when the policy autoscales."""
    nodes = cluster if cluster is not None else Cluster.from_machine(workload.machine)
    if not policy.autoscale:
        return nodes
    return nodes.with_counts(
        {t.name: policy.autoscale_bounds(t.name, t.count)[1] for t in nodes.node_types}
    )


def _node_series(feed: ReplayFeed) -> pl.DataFrame:
    """The kernel's recorded series: queue, running, cores, nodes by state, cost rate."""
    columns, rate = feed.series()  # one contiguous array per column: no row parsing
    return pl.DataFrame(
        {**{name: columns[k] for k, name in enumerate(SERIES_COLUMNS)}, "cost_per_h": rate}
    )


def _set_node_failures(feed: ReplayFeed, kernel: Kernel, failures: np.ndarray) -> np.ndarray:
    """Hand the failures to the feed, which applies them in C before each step;
    returns them checked (FAILURE_DTYPE).

    At a failure the node goes down and its jobs are requeued or fail
    (``fail_node``); ``duration_s`` later it comes back up (overlapping
    outages of one node end at the last repair); the replay wakes up for both.
    """
    failures = np.asarray(failures, dtype=FAILURE_DTYPE)
    n_nodes = len(kernel.capacity)
    bad = (failures["node"] < 0) | (failures["node"] >= n_nodes) | (failures["duration_s"] <= 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise KernelInputError(
            f"failure #{k + 1} (time {int(failures['time_s'][k])}): node must be in "
            f"0..{n_nodes - 1} and duration_s > 0"
        )
    repair = failures["time_s"] + failures["duration_s"]
    t = np.concatenate([failures["time_s"], repair])
    failing = np.repeat(np.array([1, 0], dtype=np.int8), len(failures))
    node = np.concatenate([failures["node"], failures["node"]]).astype(np.int32)
    repair_of = np.concatenate([repair, np.zeros(len(failures), dtype=np.int64)])
    # time order; at one instant repairs first, then by node
    order = np.lexsort((node, failing, t))
    feed.set_node_events(t[order], failing[order], node[order], repair_of[order], n_nodes)
    return failures


def _prepare(
    workload: Workload,
    policy: Policy,
    priority: np.ndarray | None,
    cluster: Cluster | None,
    pooled: bool = False,
) -> tuple[Kernel, ReplayFeed, Cluster]:
    """A kernel holding the workload's jobs, accounts, dependencies,
    reservations and autoscaler, its clocks started at the first submit; the
    feed that replays it; the node pool it holds (``pooled``: one node of all
    the machine's cores, see ``pool_replay``)."""
    jobs = slurm_jobs(workload.jobs, policy)
    nodes = Cluster.pool_of(workload.machine) if pooled else node_pool(workload, policy, cluster)
    capacity = nodes.capacity()
    kernel = Kernel(capacity, policy)
    kernel.set_node_types(nodes.node_type_of(), nodes.prices())
    if nodes.partitions:
        kernel.set_partitions(nodes.node_partition())
    # memory requests count only where the nodes declare memory (SWF machines do not)
    specs = job_specs(jobs, with_memory=bool(capacity[:, 1].any()), policy=policy)
    specs["part_idx"] = nodes.job_partition(jobs["partition_id"])
    if policy.order == "priority":
        if priority is None or len(priority) != len(jobs):
            raise KernelInputError("the 'priority' order needs one priority value per job")
        specs["priority"] = priority
    kernel.add_jobs(specs)
    kernel.set_accounts(dense_ids(jobs["user_id"])[1], dense_ids(jobs["group_id"])[1])
    child, parent, think = workload_dependencies(jobs)
    if len(child):
        kernel.add_dependencies(child, parent, "afterany", think)
    _add_reservations(kernel, nodes, jobs, policy)
    duration = np.minimum(jobs["run_s"], jobs["walltime_s"])
    feed = ReplayFeed(kernel, specs["submit_s"], np.maximum(duration, 0), succeeded(jobs))
    time_passes(feed, policy)
    clock_priorities(kernel, policy)
    t0 = int(jobs["submit_s"][0]) if len(jobs) else 0
    if policy.autoscale:  # (the pool already holds each type's max)
        bounds = [policy.autoscale_bounds(t.name, t.count) for t in nodes.node_types]
        kernel.configure_autoscale(bounds, policy, t0)
    kernel.start_clock(t0)
    return kernel, feed, nodes


def run_replay(
    env: simpy.Environment,
    feed: ReplayFeed,
    progress: ProgressCallback | None,
    step: Callable[[object, int], int] | None,
    before: BeforeStep | None = None,
) -> float:
    """Run the driver process to the end; the wall-clock seconds it took."""
    env.process(_replay(env, feed, progress, step, before))
    began = time.perf_counter()
    collecting = gc.isenabled()
    gc.disable()  # the loop makes no reference cycles; collections would only cost time
    try:
        env.run()
    finally:
        if collecting:
            gc.enable()
    return time.perf_counter() - began


def run_from(
    t0: int,
    feed: ReplayFeed,
    progress: ProgressCallback | None,
    step: Callable[[object, int], int] | None,
) -> tuple[float, int]:
    """Run the driver process from ``t0`` to the end in an environment of its
    own: the wall-clock seconds it took and the clock's time at the end."""
    env = simpy.Environment(initial_time=t0)
    return run_replay(env, feed, progress, step), int(env.now)


def workload_dependencies(jobs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(child row, parent row, think time) from SWF's preceding job (field 17)
    and think time (field 18): the child waits for the parent to end, then the
    think time (afterany + delay). A preceding job that is not in the workload
    is an error naming both jobs."""
    has = jobs["preceding_job_id"] > 0
    if not has.any():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    child = np.flatnonzero(has)
    wanted = jobs["preceding_job_id"][child]
    order = np.argsort(jobs["job_id"], kind="stable")
    ids = jobs["job_id"][order]
    at = np.clip(np.searchsorted(ids, wanted), 0, len(ids) - 1)
    missing = ids[at] != wanted
    if missing.any():
        k = int(np.flatnonzero(missing)[0])
        raise KernelInputError(
            f"job {int(jobs['job_id'][child[k]])} follows job {int(wanted[k])}, "
            f"which is not in the workload ({int(missing.sum())} such reference(s))"
        )
    parent = order[at]
    think = np.maximum(jobs["think_time_s"][child], 0)
    return child, parent, think


def _add_reservations(kernel: Kernel, nodes: Cluster, jobs: np.ndarray, policy: Policy) -> None:
    """The cluster's advance reservations, their owners as the kernel indexes them."""
    for reservation in nodes.reservations:
        if reservation.owner == "qos":
            names = [q.name for q in policy.qos]
            if reservation.owner_name not in names:
                raise KernelInputError(
                    f"reservation {reservation.name!r}: qos {reservation.owner_name!r} "
                    f"is not in the policy ({', '.join(names) or 'no [[qos]] tables'})"
                )
            owner_idx = names.index(reservation.owner_name)
        else:
            column = "user_id" if reservation.owner == "user" else "group_id"
            distinct = dense_ids(jobs[column])[1]
            found = np.flatnonzero(distinct == int(reservation.owner_name))
            owner_idx = int(found[0]) if len(found) else -2  # no job of that owner: nodes just idle
        kernel.add_reservation(
            reservation.start_s,
            reservation.end_s,
            nodes.reservation_nodes(reservation),
            reservation.owner,
            owner_idx,
        )


def succeeded(jobs: np.ndarray) -> np.ndarray:
    """Whether each job ends well, for afterok/afternotok dependents: not
    logged as failed (0) or cancelled (5), and not killed at its requested time."""
    failed = (jobs["status"] == 0) | (jobs["status"] == 5) | (jobs["run_s"] > jobs["walltime_s"])
    return ~failed


def _replay(
    env: simpy.Environment,
    feed: ReplayFeed,
    progress: ProgressCallback | None,
    custom_step: Callable[[object, int], int] | None = None,
    before: BeforeStep | None = None,
) -> Generator[simpy.Event, Any, None]:
    """The driver process: the hot loop of the simulator (one kernel call a step).

    ``before(now)`` runs before the step at ``now`` when ``now`` has reached
    the mark it last returned (so only at the few steps it asks for), and
    returns the next mark.

    Without a custom step or ``before`` the driver wakes up only at the times
    that can decide something: the feed's ``advance`` runs, after each step,
    the following steps that hold only completions with nothing queued (same
    steps, same order, same times), so SimPy schedules one timeout per
    deciding time instead of one per event time. The clock then goes to the
    last step's time, which ends the replay.
    """
    raw_feed, state = feed.raw
    # completions due, arrivals, one scheduling pass, the started jobs'
    # completions: one call into the kernel per distinct event time
    if custom_step is not None:
        step = custom_step
    elif before is not None:  # it must see every step's time: one at a time
        step = raw_feed.step  # type: ignore[attr-defined]
    else:
        step = raw_feed.advance  # type: ignore[attr-defined]
    timeout = env.timeout
    countdown = PROGRESS_EVERY_STEPS
    clock = int(env.now)
    now = raw_feed.next_time()  # type: ignore[attr-defined]
    mark = NO_MARK if before is None else before.first_mark()
    while now >= 0:
        if now > clock:
            yield timeout(now - clock)
            clock = now
        elif now < clock:
            raise RuntimeError(f"the replay would go back in time, to {now} from {clock}")
        if now >= mark:
            mark = before(now)  # type: ignore[misc]
        now = step(state, now)
        countdown -= 1
        if countdown == 0 and progress is not None:
            countdown = PROGRESS_EVERY_STEPS
            progress(raw_feed.n_events)  # type: ignore[attr-defined]
    last = int(raw_feed.last_s)  # type: ignore[attr-defined]
    if last > clock:  # (steps advance ran after the last wake-up)
        yield timeout(last - clock)
    if progress is not None:
        progress(raw_feed.n_events)  # type: ignore[attr-defined]


class _EstimateSampler:
    """A step of the feed, then a start estimate for every ``every``-th arrival left pending."""

    def __init__(self, feed: ReplayFeed, kernel: Kernel, every: int) -> None:
        self._feed = feed.raw[0]
        self._kernel = kernel
        self._every = every
        self.samples: list[tuple[int, int, int]] = []

    def __call__(self, state: object, at: int) -> int:
        arrived_before = self._feed.cursor  # type: ignore[attr-defined]
        next_time = int(self._feed.step(state, at))  # type: ignore[attr-defined]
        every = self._every
        first = -(-arrived_before // every) * every
        for slot in range(first, self._feed.cursor, every):  # type: ignore[attr-defined]
            if self._kernel.why_pending(slot) in WAITING:
                self.samples.append((slot, at, self._kernel.estimate_start(slot, at)))
        return next_time
