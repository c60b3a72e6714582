"""Checkpointing, retry limits and the fail action, hand-computed on one node.

One one-core node; job A needs 100 s of run (requested 200 s) and
checkpoints every 30 s. The node fails at 70 for 10 s: A's checkpoints at 30
and 60 hold, so 60 s are saved and only 10 s are lost; A restarts at the
repair (80) and needs 40 s more: it ends at 120.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from htcsim.kernel import KernelInputError
from htcsim.metrics import summarize
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.sim.failures import FAILURE_DTYPE


def one_job(run_s: int = 100, walltime_s: int = 200) -> Workload:
    jobs = empty_jobs(1)
    jobs["job_id"] = 1
    jobs["run_s"] = run_s
    jobs["walltime_s"] = walltime_s
    jobs["n_tasks"] = 1
    jobs["cores_per_task"] = 1
    return Workload(name="ckpt", jobs=jobs, machine=Machine(1, 1))


def failures(*rows: tuple[int, int, int]) -> np.ndarray:
    return np.array(list(rows), dtype=FAILURE_DTYPE)


def test_only_the_work_since_the_last_checkpoint_is_lost() -> None:
    result = simulate(one_job(), Policy(), failures=failures((70, 0, 10)), checkpoint_s=30)
    assert result.start_s.tolist() == [80]
    assert result.end_s.tolist() == [120]
    assert result.lost_s.tolist() == [10]
    assert result.saved_s.tolist() == [60]
    assert result.requeues.tolist() == [1]
    summary = summarize(result)
    assert summary["saved_core_h"] == pytest.approx(60 / 3600)
    assert summary["lost_core_h"] == pytest.approx(10 / 3600)


def test_without_checkpoints_the_whole_run_is_lost() -> None:
    result = simulate(one_job(), Policy(), failures=failures((70, 0, 10)))
    assert result.end_s.tolist() == [180]
    assert result.lost_s.tolist() == [70]
    assert result.saved_s.tolist() == [0]


def test_two_failures_count_checkpoints_from_each_restart() -> None:
    """Fails at 70 (saved 60, restart 80), again at 80 + 35 = 115 (the restart
    checkpointed at 110: saved 30 more, lost 5), back at 125: 10 s left."""
    result = simulate(
        one_job(),
        Policy(),
        failures=failures((70, 0, 10), (115, 0, 10)),
        checkpoint_s=30,
    )
    assert result.end_s.tolist() == [135]
    assert result.saved_s.tolist() == [90]
    assert result.lost_s.tolist() == [15]
    assert result.requeues.tolist() == [2]


def test_the_requested_time_shrinks_by_the_saved_work() -> None:
    """Requested 100 s, needs 100 s: after 60 s saved, the restart asks for 40 s
    and is not killed (it ends at 80 + 40 = 120, not cut at 80 + 100)."""
    result = simulate(
        one_job(run_s=100, walltime_s=100),
        Policy(),
        failures=failures((70, 0, 10)),
        checkpoint_s=30,
    )
    assert result.end_s.tolist() == [120]


def test_a_job_out_of_retries_fails() -> None:
    """max_retries 1: the first failure requeues, the second ends the job failed
    at 115, all of its second run lost."""
    policy = replace(Policy(), max_retries=1)
    result = simulate(one_job(), policy, failures=failures((70, 0, 10), (115, 0, 10)))
    assert result.requeues.tolist() == [1]
    assert result.node_failed.tolist() == [True]
    assert result.end_s.tolist() == [115]
    assert result.lost_s.tolist() == [70 + 35]
    assert summarize(result)["n_node_failed"] == 1


def test_the_fail_action_ends_the_job_at_the_first_failure() -> None:
    policy = replace(Policy(), on_node_failure="fail")
    result = simulate(one_job(), policy, failures=failures((70, 0, 10)), checkpoint_s=30)
    assert result.requeues.tolist() == [0]
    assert result.node_failed.tolist() == [True]
    assert result.end_s.tolist() == [70]
    assert result.lost_s.tolist() == [70]


def test_a_failed_dependency_parent_counts_as_not_ok() -> None:
    """Job 2 follows job 1 (afterany): it still runs after job 1 fails."""
    jobs = empty_jobs(2)
    jobs["job_id"] = [1, 2]
    jobs["run_s"] = [100, 10]
    jobs["walltime_s"] = 200
    jobs["n_tasks"] = 1
    jobs["cores_per_task"] = 1
    jobs["preceding_job_id"] = [-1, 1]
    jobs["think_time_s"] = [-1, 0]
    workload = Workload(name="dep", jobs=jobs, machine=Machine(2, 1))
    policy = replace(Policy(), on_node_failure="fail")
    result = simulate(workload, policy, failures=failures((50, 0, 10)))
    assert result.end_s.tolist() == [50, 60]


def test_negative_checkpoint_interval_is_an_error() -> None:
    with pytest.raises(KernelInputError, match="checkpoint"):
        simulate(one_job(), Policy(), checkpoint_s=-5)
