"""What the kernel answers besides decisions: estimates, reasons, cancel, node states."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcsim.kernel import (
    JOB_SPEC_DTYPE,
    Kernel,
    KernelInputError,
    NodeState,
    Reason,
    node_capacity,
)
from htcsim.policy import Policy


def specs(rows: list[tuple[int, int, int]]) -> np.ndarray:
    """(submit, cores, walltime) rows -> kernel specs with ids 1..n."""
    out = np.zeros(len(rows), dtype=JOB_SPEC_DTYPE)
    for k, (submit, cores, wall) in enumerate(rows):
        out[k]["job_id"] = k + 1
        out[k]["submit_s"] = submit
        out[k]["n_tasks"] = cores
        out[k]["walltime_s"] = wall
        out[k]["per_task"][0] = 1
    return out


def loaded(backfill: str, rows: list[tuple[int, int, int]], n_nodes: int = 4) -> Kernel:
    kernel = Kernel(node_capacity(n_nodes, 1), Policy(backfill=backfill))
    kernel.add_jobs(specs(rows))
    for slot in range(len(rows)):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    return kernel


# 4 cores. A: 2 cores until 100. B: 4 cores, 50 s. C: 3 cores, 60 s. D: 4 cores, 10 s.
ROWS = [(0, 2, 100), (0, 4, 50), (0, 3, 60), (0, 4, 10)]


@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
def test_start_estimates_follow_the_reservation_profile(backfill: str) -> None:
    kernel = loaded(backfill, ROWS)
    assert kernel.start_times()[0] == 0
    # B waits for A's requested end; C for B's; D for C's.
    assert kernel.estimate_start(1, 0) == 100
    assert kernel.estimate_start(2, 0) == 150
    assert kernel.estimate_start(3, 0) == 210
    assert kernel.estimate_start(0, 0) == 0  # a running job's estimate is its start


def test_reasons_name_the_job_first_in_line() -> None:
    kernel = loaded("easy", ROWS)
    assert kernel.why_pending(1) == Reason.Resources
    assert kernel.why_pending(2) == Reason.Priority
    assert kernel.why_pending(0) == Reason.NotPending


def test_cancel_a_pending_and_a_running_job() -> None:
    kernel = loaded("easy", ROWS)
    kernel.cancel(1, 5)  # B leaves the queue: C (3 cores) still does not fit in 2
    assert kernel.schedule(5) == 0
    kernel.cancel(0, 6)  # A is killed: its 2 cores come back, C starts
    assert kernel.schedule(6) == 1
    assert kernel.start_times()[2] == 6
    assert kernel.free_total()[0] == 1
    with pytest.raises(ValueError, match="already ended"):
        kernel.cancel(0, 7)


def test_a_down_node_takes_no_work_and_counts_for_nothing() -> None:
    kernel = Kernel(node_capacity(2, 4), Policy())
    kernel.set_node_state(0, NodeState.DOWN)
    kernel.add_jobs(specs([(0, 4, 10), (0, 1, 10)]))
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    assert kernel.schedule(0) == 1
    nodes, tasks = kernel.job_allocation(0)
    assert nodes.tolist() == [1] and tasks.tolist() == [4]
    assert kernel.free_total()[0] == 0
    kernel.set_node_state(0, NodeState.UP)
    assert kernel.schedule(1) == 1
    assert kernel.job_allocation(1)[0].tolist() == [0]


def test_multi_core_tasks_are_placed_whole_on_nodes() -> None:
    # 3 nodes x 4 cores; a job of 3 tasks x 2 cores needs 2 nodes (2 tasks fit on one).
    kernel = Kernel(node_capacity(3, 4), Policy())
    job = specs([(0, 3, 10)])
    job["per_task"][0][0] = 2
    kernel.add_jobs(job)
    kernel.submit(0, 0)
    assert kernel.schedule(0) == 1
    nodes, tasks = kernel.job_allocation(0)
    assert nodes.tolist() == [0, 1] and tasks.tolist() == [2, 1]
    assert kernel.free_per_node()[:, 0].tolist() == [0, 2, 4]


def test_impossible_requests_are_refused_at_the_boundary() -> None:
    kernel = Kernel(node_capacity(2, 4), Policy())
    too_big = specs([(0, 9, 10)])
    with pytest.raises(KernelInputError, match="job 1 asks for more than the whole cluster"):
        kernel.add_jobs(too_big)
    fat_task = specs([(0, 1, 10)])
    fat_task["per_task"][0][0] = 5
    with pytest.raises(KernelInputError, match="job 1 has a task larger than every node"):
        kernel.add_jobs(fat_task)
    with pytest.raises(KernelInputError, match="job 1 has a negative walltime"):
        kernel.add_jobs(specs([(0, 1, -1)]))
    with pytest.raises(KernelInputError, match="JOB_SPEC_DTYPE"):
        kernel.add_jobs(np.zeros(1, dtype=np.int64))
    with pytest.raises(IndexError):
        kernel.submit(5, 0)


@pytest.mark.parametrize(("placement", "node"), [("first_fit", 0), ("best_fit", 1), ("spread", 2)])
def test_placement_strategies_choose_their_node(placement: str, node: int) -> None:
    # Nodes of 3, 2 and 4 cores; a one-task, two-core job. first_fit: the first
    # node that fits (0); best_fit: the one left fullest (1, no core left);
    # spread: the one with the most free cores (2).
    capacity = np.zeros((3, 4), dtype=np.int64)
    capacity[:, 0] = [3, 2, 4]
    kernel = Kernel(capacity, Policy(placement=placement))  # type: ignore[arg-type]
    job = specs([(0, 1, 10)])
    job["per_task"][0][0] = 2
    kernel.add_jobs(job)
    kernel.submit(0, 0)
    assert kernel.schedule(0) == 1
    assert kernel.job_allocation(0)[0].tolist() == [node]


def test_spread_balances_single_core_jobs_over_nodes() -> None:
    kernel = Kernel(node_capacity(3, 4), Policy(placement="spread"))
    kernel.add_jobs(specs([(0, 1, 10)] * 6))
    for slot in range(6):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 6
    assert kernel.free_per_node()[:, 0].tolist() == [2, 2, 2]
    packed = Kernel(node_capacity(3, 4), Policy(placement="best_fit"))
    packed.add_jobs(specs([(0, 1, 10)] * 6))
    for slot in range(6):
        packed.submit(slot, 0)
    packed.schedule(0)
    assert packed.free_per_node()[:, 0].tolist() == [0, 2, 4]


def test_a_user_at_its_limit_is_passed_over_not_waited_for() -> None:
    # 4 cores, at most one running job per user. Alice (user 0) runs A; her
    # next job B is held back by the limit (reason UserLimit) and is not the
    # head: Bob's C (user 1) starts although it comes after B.
    kernel = Kernel(node_capacity(4, 1), Policy(max_running_jobs_per_user=1))
    jobs = specs([(0, 1, 100), (0, 1, 100), (0, 1, 100)])
    jobs["user_idx"] = [0, 0, 1]
    kernel.add_jobs(jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 2
    assert kernel.start_times().tolist() == [0, -1, 0]
    assert kernel.why_pending(1) == Reason.UserLimit
    kernel.finish(0, 100)
    assert kernel.schedule(100) == 1
    assert kernel.start_times()[1] == 100


def test_new_priorities_reorder_the_queue() -> None:
    # 1 core busy until 10; B then C queue. Raising C's priority makes it next.
    kernel = Kernel(node_capacity(1, 1), Policy(order="priority"))
    kernel.add_jobs(specs([(0, 1, 10), (1, 1, 10), (2, 1, 10)]))
    for slot in range(3):
        kernel.submit(slot, slot)
        kernel.schedule(slot)
    assert kernel.pending_jobs().tolist() == [1, 2]
    kernel.set_priorities(np.array([2]), np.array([5.0]))
    assert kernel.pending_jobs().tolist() == [2, 1]
    kernel.finish(0, 10)
    kernel.schedule(10)
    assert kernel.start_times().tolist() == [0, -1, 10]


FIELDS = ("n_tasks", "cores", "mem_mib", "gpus", "disk", "walltime_s", "part_idx")
EDGES = (-2, -1, 0, 1, 2, 3, 4, 8, 9, 16, 17, 20, 21, 28, 29, 32, 33, 64, 65, 72, 73, 104, 105)
"""Values on either side of every bound of the cluster below (a node's, a partition's,
the whole's), and of the lower bounds."""


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(0, 8), st.integers(0, 1)),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 2),
    st.sampled_from(FIELDS),
    st.sampled_from(EDGES),
    st.booleans(),
)
def test_a_small_batch_is_checked_as_a_large_one(
    rows: list[tuple[int, int, int, int]],
    at: int,
    field: str,
    value: int,
    two_partitions: bool,
) -> None:
    """A batch of a few jobs is checked in plain Python first: it is refused exactly
    when the same jobs, repeated past that size (the NumPy checks), are refused.
    Jobs that fit, but for one field of one of them set to a value around a bound."""
    kernel = Kernel(np.array([[8, 32, 2, 0], [4, 64, 0, 0], [16, 8, 1, 0]], dtype=np.int64))
    if two_partitions:
        kernel.set_partitions(np.array([0, 1, 1], dtype=np.int32))
    few = np.zeros(len(rows), dtype=JOB_SPEC_DTYPE)
    for k, (n_tasks, cores, mem, gpus) in enumerate(rows):
        few[k]["job_id"] = k + 1
        few[k]["n_tasks"] = n_tasks
        few[k]["per_task"] = (cores, mem, gpus, 0)
        few[k]["walltime_s"] = 60
    k = at % len(rows)  # one field of one job set to a value around a bound (or within)
    if field in ("n_tasks", "walltime_s", "part_idx"):
        few[k][field] = value
    else:
        few[k]["per_task"][FIELDS.index(field) - 1] = value
    many = np.concatenate([few] * (9 // len(rows) + 1))
    assert len(many) > 8  # past the plain-Python size: the NumPy checks alone

    def refused(specs: np.ndarray) -> bool:
        try:
            kernel.check_jobs(specs)
        except KernelInputError:
            return True
        return False

    assert refused(few) == refused(many)
