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
from htcsim.kernel import Kernel, KernelInputError, ReplayFeed, job_specs
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.schedule import SimResult

ProgressCallback = Callable[[int], None]
"""Called now and then with the number of events applied so far."""

PROGRESS_EVERY_STEPS = 1 << 13


def simulate(
    workload: Workload,
    policy: Policy | None = None,
    *,
    priority: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    cluster: Cluster | None = None,
) -> SimResult:
    """Replay ``workload`` under ``policy`` and return the schedule.

    ``priority`` (one value per job, larger first) is required by the
    ``priority`` queue order and ignored otherwise. ``cluster`` replaces the
    workload's machine (identical nodes) by the node types of a cluster file.
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
    env.process(_replay(env, feed, progress))
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
    )


def _replay(
    env: simpy.Environment, feed: ReplayFeed, progress: ProgressCallback | None
) -> Generator[simpy.Event, Any, None]:
    """The driver process: the hot loop of the simulator (a few C calls a step)."""
    raw_feed, state = feed.raw
    step = raw_feed.step  # type: ignore[attr-defined]
    timeout = env.timeout
    countdown = PROGRESS_EVERY_STEPS
    clock = int(env.now)
    now = raw_feed.next_time()  # type: ignore[attr-defined]
    while now >= 0:
        if now > clock:
            yield timeout(now - clock)
            clock = now
        # completions due, arrivals, one scheduling pass, the started jobs'
        # completions: one call into the kernel per distinct event time
        now = step(state, now)
        countdown -= 1
        if countdown == 0 and progress is not None:
            countdown = PROGRESS_EVERY_STEPS
            progress(raw_feed.n_events)  # type: ignore[attr-defined]
    if progress is not None:
        progress(raw_feed.n_events)  # type: ignore[attr-defined]
