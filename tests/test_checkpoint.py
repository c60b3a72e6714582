"""Checkpointing, retry limits and the fail action, hand-computed on one node.

One one-core node; job A needs 100 s of run (requested 200 s) and
checkpoints every 30 s. The node fails at 70 for 10 s: A's checkpoints at 30
and 60 hold, so 60 s are saved and only 10 s are lost; A restarts at the
repair (80) and needs 40 s more: it ends at 120.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from htcsim.kernel import KernelInputError
from htcsim.metrics import summarize
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.segments import SEGMENT_OUTCOMES
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


# ------------------------------------------------------------------ run segments
#
# The first case, by segment: A ran 0-70 (requeued: 60 s saved by the
# checkpoints at 30 and 60, 10 s lost), queued again 70-80, then ran the 40 s
# left, 80-120. Its core was busy 70 + 40 = 110 s of the 120 s makespan:
# utilization 110/120, where the last run alone (40 s) gave 1/3. The wait is
# 0 (it started at once), the response 120, the run it needed 110 - 10 = 100:
# bounded slowdown 1.2.


def test_a_checkpointed_job_has_two_segments() -> None:
    result = simulate(one_job(), Policy(), failures=failures((70, 0, 10)), checkpoint_s=30)
    frame = result.run_segments().to_frame(result.workload.jobs["job_id"], np.ones(1, np.int64))
    assert frame.rows() == [
        # job, segment, start, end, run, cores, outcome, saved, lost, nodes
        (1, 0, 0, 70, 70, 1, "requeued", 60, 10, [0]),
        (1, 1, 80, 120, 40, 1, "completed", 0, 0, [0]),
    ]


def test_utilization_and_slowdown_count_the_saved_and_the_lost_run() -> None:
    from htcsim.metrics import per_job_table

    result = simulate(one_job(), Policy(), failures=failures((70, 0, 10)), checkpoint_s=30)
    summary = summarize(result)
    assert summary["utilization"] == pytest.approx(110 / 120)
    assert summary["mean_wait_s"] == 0.0
    assert summary["mean_requeue_wait_s"] == 10.0
    assert summary["mean_response_s"] == 120.0
    assert summary["mean_bsld"] == pytest.approx(1.2)
    table = per_job_table(result)
    assert table.select(
        "first_start_s", "run_s", "lost_core_s", "saved_core_s", "final_state"
    ).rows() == [(0, 110, 10, 60, "completed")]
    # (the replay also stepped at 100, when the first run's completion was due)
    series = result.time_series()
    assert series["time_s"].to_list() == [0, 70, 80, 100, 120]
    assert series["busy_cores"].to_list() == [1, 0, 1, 1, 0]
    assert series["queued_jobs"].to_list() == [0, 1, 0, 0, 0]


def test_two_failures_give_three_segments() -> None:
    """As test_two_failures_count_checkpoints_from_each_restart: 0-70 (saved 60,
    lost 10), 80-115 (saved 30, lost 5), 125-135: busy 115 s of 135."""
    result = simulate(
        one_job(), Policy(), failures=failures((70, 0, 10), (115, 0, 10)), checkpoint_s=30
    )
    runs = result.run_segments()
    assert list(zip(runs.start_s, runs.end_s, runs.saved_s, runs.lost_s, strict=True)) == [
        (0, 70, 60, 10),
        (80, 115, 30, 5),
        (125, 135, 0, 0),
    ]
    assert summarize(result)["utilization"] == pytest.approx(115 / 135)


def test_a_failed_job_counts_as_failed_not_finished() -> None:
    """max_retries 1: requeued at 70 (run lost: 70), failed at 115 in its second
    run (35 lost). It started and ended, but did not finish: no slowdown, no
    response; its cores were busy 70 + 35 = 105 s of 115."""
    from htcsim.metrics import per_job_table

    policy = replace(Policy(), max_retries=1)
    result = simulate(one_job(), policy, failures=failures((70, 0, 10), (115, 0, 10)))
    summary = summarize(result)
    assert (summary["n_started"], summary["n_finished"], summary["n_node_failed"]) == (1, 0, 1)
    assert summary["utilization"] == pytest.approx(105 / 115)
    assert math.isnan(summary["mean_bsld"]) and math.isnan(summary["mean_response_s"])
    runs = result.run_segments()
    assert [SEGMENT_OUTCOMES[k] for k in runs.outcome] == ["requeued", "failed"]
    table = per_job_table(result)
    assert table.select("end_s", "final_state", "bounded_slowdown").rows() == [
        (115, "failed", None)
    ]
