"""A log's machine of one-core nodes replays as one pool, with the same results.

The pool is only a cheaper way to hold the same machine: every per-job
result, summary figure, node-usage row and time-series column must be the
one the node-per-processor table gives, whatever the backfill and placement.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from htcsim.cluster import Cluster
from htcsim.kernel import KernelInputError
from htcsim.metrics import node_usage, summarize
from htcsim.model import Machine
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.sim.driver import pool_replay
from htcsim.sim.failures import FAILURE_DTYPE
from htcsim.workload.lublin import generate_lublin

TIMINGS = ("replay_s", "jobs_per_second")


@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
@pytest.mark.parametrize("placement", ["first_fit", "best_fit", "spread", "cons_tres"])
def test_the_pool_gives_what_one_node_per_processor_gives(backfill: str, placement: str) -> None:
    workload = generate_lublin(2_000, 64, seed=5, load=0.9)
    policy = Policy(backfill=backfill, placement=placement)  # type: ignore[arg-type]
    assert pool_replay(workload, policy, None, None)
    pooled = simulate(workload, policy, series_every_s=600)
    nodes = simulate(
        workload, policy, cluster=Cluster.from_machine(workload.machine), series_every_s=600
    )
    assert pooled.start_s.tobytes() == nodes.start_s.tobytes()
    assert pooled.end_s.tobytes() == nodes.end_s.tobytes()
    assert pooled.counters == nodes.counters
    a, b = summarize(pooled), summarize(nodes)
    for key in a.keys() - set(TIMINGS):
        same = a[key] == b[key] or (
            isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key])
        )
        assert same, key
    assert node_usage(pooled).equals(node_usage(nodes))
    assert pooled.node_series is not None and nodes.node_series is not None
    assert pooled.node_series.equals(nodes.node_series)


def test_replays_that_need_node_identity_keep_one_node_per_processor() -> None:
    workload = generate_lublin(200, 16, seed=2)
    policy = Policy()
    failure = np.array([(workload.jobs["submit_s"][0] + 10, 3, 60)], dtype=FAILURE_DTYPE)
    assert not pool_replay(workload, policy, None, failure)
    assert not pool_replay(workload, policy, Cluster.from_machine(workload.machine), None)
    eight_core_nodes = dataclasses.replace(workload, machine=Machine(2, 8))
    assert not pool_replay(eight_core_nodes, policy, None, None)
    one_node = dataclasses.replace(workload, machine=Machine(1, 16))
    assert not pool_replay(one_node, policy, None, None)
    # a failure names node 3 of the 16: the replay runs on the node table
    result = simulate(workload, policy, failures=failure)
    assert (result.start_s >= 0).all()


def test_a_task_wider_than_a_node_is_still_refused() -> None:
    """On 16 one-core nodes a task of 2 cores fits nowhere; the pool must not take it."""
    workload = generate_lublin(50, 16, seed=2)
    jobs = workload.jobs.copy()
    jobs["cores_per_task"][7] = 2
    jobs["n_tasks"][7] = 1
    wide = dataclasses.replace(workload, jobs=jobs)
    assert not pool_replay(wide, Policy(), None, None)
    with pytest.raises(KernelInputError, match="has a task larger than every node"):
        simulate(wide)
