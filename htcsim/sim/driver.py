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
from typing import Any

import numpy as np
import simpy

from htcsim.cluster import Cluster
from htcsim.kernel import Kernel, KernelInputError, Reason, ReplayFeed, job_specs
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.schedule import ESTIMATE_DTYPE, SimResult

ProgressCallback = Callable[[int], None]
"""Called now and then with the number of events applied so far."""

PROGRESS_EVERY_STEPS = 1 << 13
WAITING = (Reason["Resources"], Reason["Priority"])


def simulate(
    workload: Workload,
    policy: Policy | None = None,
    *,
    priority: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    cluster: Cluster | None = None,
    estimate_sample: int = 0,
) -> SimResult:
    """Replay ``workload`` under ``policy`` and return the schedule.

    ``priority`` (one value per job, larger first) is required by the
    ``priority`` queue order and ignored otherwise. ``cluster`` replaces the
    workload's machine (identical nodes) by the node types of a cluster file.
    ``estimate_sample`` N > 0 asks the kernel, for every N-th job still pending
    after the pass at its submit time, when it expects the job to start: the
    result's ``estimates`` then calibrate the estimate against the real start.
    Decisions are the same with or without sampling.
    """
    policy = policy or Policy()
    jobs = workload.jobs
    nodes = cluster if cluster is not None else Cluster.from_machine(workload.machine)
    capacity = nodes.capacity()
    kernel = Kernel(capacity, policy)
    # memory requests count only where the nodes declare memory (SWF machines do not)
    specs = job_specs(jobs, with_memory=bool(capacity[:, 1].any()))
    if policy.order == "priority":
        if priority is None or len(priority) != len(jobs):
            raise KernelInputError("the 'priority' order needs one priority value per job")
        specs["priority"] = priority
    kernel.add_jobs(specs)
    duration = np.minimum(jobs["run_s"], np.maximum(jobs["walltime_s"], 1))
    feed = ReplayFeed(kernel, specs["submit_s"], np.maximum(duration, 0))
    env = simpy.Environment(initial_time=int(jobs["submit_s"][0]) if len(jobs) else 0)
    sampler = _EstimateSampler(feed, kernel, estimate_sample) if estimate_sample > 0 else None
    env.process(_replay(env, feed, progress, sampler))
    began = time.perf_counter()
    collecting = gc.isenabled()
    gc.disable()  # the loop makes no reference cycles; collections would only cost time
    try:
        env.run()
    finally:
        if collecting:
            gc.enable()
    elapsed = time.perf_counter() - began
    return SimResult(
        workload=workload,
        policy=policy,
        start_s=kernel.start_times(),
        end_s=kernel.end_times(),
        replay_seconds=elapsed,
        counters=kernel.counters,
        cluster=cluster,
        estimates=None if sampler is None else np.array(sampler.samples, dtype=ESTIMATE_DTYPE),
    )


def _replay(
    env: simpy.Environment,
    feed: ReplayFeed,
    progress: ProgressCallback | None,
    sampler: _EstimateSampler | None = None,
) -> Generator[simpy.Event, Any, None]:
    """The driver process: the hot loop of the simulator (one kernel call a step)."""
    raw_feed, state = feed.raw
    # completions due, arrivals, one scheduling pass, the started jobs'
    # completions: one call into the kernel per distinct event time
    step = sampler if sampler is not None else raw_feed.step  # type: ignore[attr-defined]
    timeout = env.timeout
    countdown = PROGRESS_EVERY_STEPS
    clock = int(env.now)
    now = raw_feed.next_time()  # type: ignore[attr-defined]
    while now >= 0:
        if now > clock:
            yield timeout(now - clock)
            clock = now
        now = step(state, now)
        countdown -= 1
        if countdown == 0 and progress is not None:
            countdown = PROGRESS_EVERY_STEPS
            progress(raw_feed.n_events)  # type: ignore[attr-defined]
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
