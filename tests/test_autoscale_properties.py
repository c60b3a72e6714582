"""Invariants of autoscaling with node failures, on random workloads.

* every job completes (the autoscaler always serves waiting demand, failed
  nodes come back, requeued jobs run again);
* the pool never leaves [min, max];
* a node with a task is never off (no running job is ever removed) and never
  over capacity;
* the cost basis is the integral of the provisioned nodes over time: the
  kernel's node-seconds equal the area under the recorded series.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.kernel import Kernel, NodeState, ReplayFeed, job_specs
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.sim.failures import failure_model


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Workload, Policy, int]:
    n_nodes = draw(st.integers(2, 6))
    n_jobs = draw(st.integers(1, 40))
    jobs = empty_jobs(n_jobs)
    jobs["job_id"] = np.arange(1, n_jobs + 1)
    jobs["submit_s"] = np.sort(
        draw(st.lists(st.integers(0, 3000), min_size=n_jobs, max_size=n_jobs))
    )
    jobs["run_s"] = draw(st.lists(st.integers(0, 600), min_size=n_jobs, max_size=n_jobs))
    jobs["walltime_s"] = jobs["run_s"] + draw(st.integers(0, 300))
    jobs["n_tasks"] = draw(st.lists(st.integers(1, n_nodes), min_size=n_jobs, max_size=n_jobs))
    jobs["cores_per_task"] = 1
    low = draw(st.integers(0, n_nodes))
    policy = Policy(
        backfill=draw(st.sampled_from(["none", "easy", "conservative"])),
        autoscale=True,
        autoscale_min_nodes=low,
        autoscale_max_nodes=n_nodes,
        autoscale_wait_s=draw(st.integers(0, 200)),
        autoscale_boot_delay_s=draw(st.integers(0, 100)),
        autoscale_idle_s=draw(st.integers(0, 400)),
        autoscale_cooldown_s=draw(st.integers(0, 150)),
        autoscale_step=draw(st.integers(1, 4)),
        autoscale_interval_s=draw(st.sampled_from([0, 0, 30, 100])),
        max_retries=draw(st.integers(0, 3)),
    )
    workload = Workload(name="prop", jobs=jobs, machine=Machine(n_nodes, 1))
    return workload, policy, draw(st.integers(0, 2**16))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_job_completes_and_cost_is_the_integral_of_nodes_up(
    scenario: tuple[Workload, Policy, int],
) -> None:
    workload, policy, seed = scenario
    n_nodes = workload.machine.n_nodes
    failures = failure_model(n_nodes, 2000.0, 60.0, 6000, seed=seed)
    result = simulate(workload, policy, failures=failures)
    # every job ended: ran to its end, or failed on a node with no retry left
    assert (result.start_s >= 0).all() and (result.end_s >= 0).all()
    series = result.node_series
    assert series is not None
    off = series["nodes_off"].to_numpy()
    up = n_nodes - off
    assert (up <= n_nodes).all()
    assert (up >= policy.autoscale_min_nodes).all()
    times = series["time_s"].to_numpy()
    area = int(np.sum(up[:-1] * np.diff(times)))
    assert int(result.node_seconds.sum()) == area


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_node_with_a_task_is_never_off_or_over_capacity(
    scenario: tuple[Workload, Policy, int],
) -> None:
    """Drive the kernel step by step and look at every node after every step."""
    workload, policy, _ = scenario
    policy = replace(policy, max_retries=0)
    jobs = workload.jobs
    n_nodes = workload.machine.n_nodes
    kernel = Kernel(np.tile([1, 0, 0, 0], (n_nodes, 1)), policy)
    kernel.set_node_types(np.zeros(n_nodes, dtype=np.int32), np.zeros(1))
    specs = job_specs(jobs, with_memory=False, policy=policy)
    kernel.add_jobs(specs)
    kernel.configure_autoscale([(policy.autoscale_min_nodes, n_nodes)], policy, 0)
    kernel.start_clock(0)
    feed = ReplayFeed(kernel, specs["submit_s"], np.minimum(jobs["run_s"], jobs["walltime_s"]))
    now = feed.next_time()
    steps = 0
    while now >= 0:
        now = feed.step(now)
        steps += 1
        assert steps < 100_000
        states = kernel.node_states()
        tasks = kernel._state.tasks_per_node()
        free = kernel.free_per_node()
        assert (free[:, 0] >= 0).all()
        assert not ((states == NodeState["OFF"]) & (tasks > 0)).any()
        assert not ((states == NodeState["BOOTING"]) & (tasks > 0)).any()
        provisioned = int(np.count_nonzero(states != NodeState["OFF"]))
        assert policy.autoscale_min_nodes <= provisioned <= n_nodes
    assert (kernel.end_times() >= 0).all()
