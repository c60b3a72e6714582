"""A node fails under running jobs: they are requeued, and the lost run time is counted.

Hand-computed: 2 one-core nodes, FCFS + EASY. A (submit 0, run 100) lands on
node 0, B (submit 0, run 100) on node 1, C (submit 5, run 50) waits. Node 0
fails at 30: A goes back to the queue, keeping its place (submit 0) ahead of
C, with 30 s of run lost. B ends at 100 and A restarts on node 1 (node 0 is
down), ending at 200; then C runs 200-250. A's first completion (due at 100)
no longer holds and is ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from htcsim.kernel import JOB_SPEC_DTYPE, JobState, Kernel, NodeState, ReplayFeed, node_capacity
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.schedule import SimResult
from htcsim.sim.failures import FailureTraceError, load_failures


def test_jobs_on_a_failed_node_are_requeued_and_restart() -> None:
    specs = np.zeros(3, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = [1, 2, 3]
    specs["submit_s"] = [0, 0, 5]
    specs["walltime_s"] = 1_000
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = 1
    specs["user_idx"] = specs["group_idx"] = specs["qos_idx"] = -1
    kernel = Kernel(node_capacity(2, 1), Policy())
    kernel.add_jobs(specs)
    feed = ReplayFeed(kernel, specs["submit_s"], np.array([100, 100, 50]))
    failed: list[int] = []
    now = feed.next_time()
    while now >= 0:
        if now > 30 and not failed:
            failed = kernel.fail_node(0, 30).tolist()
            now = feed.step(30)
            assert kernel.why_pending(0).name == "Resources"
            continue
        now = feed.step(now)
    assert failed == [0]
    assert kernel.start_times().tolist() == [100, 0, 200]
    assert kernel.end_times().tolist() == [200, 100, 250]
    counts, lost = kernel.requeue_counts()
    assert counts.tolist() == [1, 0, 0]
    assert lost.tolist() == [30, 0, 0]
    assert kernel.node_states().tolist() == [NodeState["DOWN"], NodeState["UP"]]
    assert (kernel.job_states() == JobState["ENDED"]).all()
    assert kernel.job_allocation(0)[0].tolist() == []  # ended: nothing held


def test_a_failed_node_releases_every_node_of_a_spanning_job() -> None:
    """A 3-task job over nodes 0-2; node 1 fails: the job is requeued and nodes 0
    and 2 are free again at once, node 1 is down."""
    specs = np.zeros(1, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = 1
    specs["walltime_s"] = 100
    specs["n_tasks"] = 3
    specs["per_task"][:, 0] = 1
    specs["user_idx"] = specs["group_idx"] = specs["qos_idx"] = -1
    kernel = Kernel(node_capacity(3, 1), Policy())
    kernel.add_jobs(specs)
    kernel.submit(0, 0)
    kernel.schedule(0)
    assert kernel.fail_node(1, 10).tolist() == [0]
    assert kernel.free_per_node()[:, 0].tolist() == [1, 1, 1]
    assert kernel.free_total()[0] == 2  # node 1 is down
    assert kernel.state_of(0) == JobState["PENDING"]
    assert kernel.why_pending(0).name == "NodeDown"


def test_a_failure_trace_through_the_simulator() -> None:
    """The same case as the first test, driven by simulate(failures=...): node 0
    fails at 30 for 500 s (so it is still down when A restarts at 100 on node 1)."""
    from htcsim.model import Machine, Workload, empty_jobs
    from htcsim.sim import simulate
    from htcsim.sim.failures import FAILURE_DTYPE

    jobs = empty_jobs(3)
    jobs["job_id"] = [1, 2, 3]
    jobs["submit_s"] = [0, 0, 5]
    jobs["run_s"] = [100, 100, 50]
    jobs["walltime_s"] = 1_000
    jobs["n_tasks"] = 1
    jobs["cores_per_task"] = 1
    workload = Workload(name="fail", jobs=jobs, machine=Machine(2, 1))
    failures = np.array([(30, 0, 500)], dtype=FAILURE_DTYPE)
    result = simulate(workload, Policy(), failures=failures)
    assert result.start_s.tolist() == [100, 0, 200]
    assert result.end_s.tolist() == [200, 100, 250]
    assert result.requeues is not None and result.requeues.tolist() == [1, 0, 0]
    assert result.lost_s is not None and result.lost_s.tolist() == [30, 0, 0]


def test_a_repaired_node_takes_work_again() -> None:
    """One node: A runs 0-100; the node fails at 10 for 40 s: A restarts at 50
    (the repair wakes the replay up although no job event happens then)."""
    from htcsim.model import Machine, Workload, empty_jobs
    from htcsim.sim import simulate
    from htcsim.sim.failures import FAILURE_DTYPE

    jobs = empty_jobs(1)
    jobs["job_id"] = 1
    jobs["run_s"] = 100
    jobs["walltime_s"] = 1_000
    jobs["n_tasks"] = 1
    jobs["cores_per_task"] = 1
    workload = Workload(name="repair", jobs=jobs, machine=Machine(1, 1))
    failures = np.array([(10, 0, 40)], dtype=FAILURE_DTYPE)
    result = simulate(workload, Policy(), failures=failures)
    assert result.start_s.tolist() == [50]
    assert result.end_s.tolist() == [150]
    assert result.lost_s is not None and result.lost_s.tolist() == [10]


def test_simulate_with_a_failure_trace_file(tmp_path: Path) -> None:
    """The CLI reads the CSV, replays with it and reports requeues and lost work."""
    from typer.testing import CliRunner

    from htcsim.cli.app import app

    trace = tmp_path / "failures.csv"
    trace.write_text("time_s,node,duration_s\n1000,0,3600\n5000,3,600\n")
    result = CliRunner().invoke(app, ["simulate", "--max-jobs", "300", "--failures", str(trace)])
    assert result.exit_code == 0, result.output
    assert "requeued (node failure)" in result.output
    assert "core-hours lost to failures" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,node,duration_s\n1,0,5\n", "missing column(s) time_s"),
        ("time_s,node,duration_s\n1,0,5\n2,x,5\n", "failures.csv:3: node 'x' is not an integer"),
        ("time_s,node,duration_s\n1,0,0\n", "failures.csv:2: duration_s must be >= 1"),
    ],
)
def test_a_bad_failure_trace_names_the_row(tmp_path: Path, text: str, message: str) -> None:
    trace = tmp_path / "failures.csv"
    trace.write_text(text)
    with pytest.raises(FailureTraceError, match=re.escape(message)):
        load_failures(trace)


def test_the_failure_model_is_seeded_and_has_the_asked_means() -> None:
    """Alternating exponential up and repair times: same seed, same failures; over
    a long horizon the mean repair and the failure rate match the parameters."""
    from htcsim.sim.failures import failure_model

    a = failure_model(50, mtbf_s=10_000.0, mttr_s=500.0, horizon_s=10_000_000, seed=3)
    b = failure_model(50, mtbf_s=10_000.0, mttr_s=500.0, horizon_s=10_000_000, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, failure_model(50, 10_000.0, 500.0, 10_000_000, seed=4))
    assert (np.diff(a["time_s"]) >= 0).all()
    assert abs(a["duration_s"].mean() - 500) < 25
    # one failure per (mtbf + mttr) seconds per node, on average
    expected = 50 * 10_000_000 / 10_500
    assert abs(len(a) - expected) < 0.05 * expected
    # a node's next failure comes after its previous repair
    for node in (0, 17, 49):
        mine = a[a["node"] == node]
        assert (mine["time_s"][1:] >= mine["time_s"][:-1] + mine["duration_s"][:-1]).all()


def test_random_failures_from_the_command_line(tmp_path: Path) -> None:
    """--mtbf/--mttr draw seeded failures for every node; the same seed, the same table."""
    from typer.testing import CliRunner

    from htcsim.cli.app import app

    args = ["simulate", "KTH-SP2", "--max-jobs", "2000", "--mtbf", "100", "--mttr", "2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output

    def requeued(output: str) -> str:
        """The requeue count cell (column widths follow the replay speed row)."""
        line = next(line for line in output.splitlines() if "requeued" in line)
        return line.split("│")[2].strip()

    assert requeued(first.output) not in ("", "0")
    again = CliRunner().invoke(app, args)
    assert requeued(again.output) == requeued(first.output)
    trace = tmp_path / "f.csv"
    trace.write_text("time_s,node,duration_s\n1,0,5\n")
    both = CliRunner().invoke(app, [*args, "--failures", str(trace)])
    assert both.exit_code == 2
    assert "either --failures or --mtbf" in both.output


# ------------------------------------------------------------------ run segments
#
# The case of the first test through simulate(failures=...): node 0 fails at
# 30 for 500 s. A ran 0-30 on node 0 (requeued, 30 s lost), then 100-200 on
# node 1; B ran 0-100; C (submitted at 5) 200-250. By hand:
#
#   waits: A 0 (its first start), B 0, C 195           mean 65
#   A queued again 30-100: requeue wait 70
#   busy core-seconds 30 + 100 + 100 + 50 = 280 over 2 cores x 250 s: 0.56
#   (the last runs alone, 250, gave 0.5: A's 30 s vanished)
#   responses 200, 100, 245; bounded slowdowns over the run each job needed
#   (A: 130 s held less 30 s lost = 100): 2.0, 1.0, 245/50 = 4.9


def _three_jobs() -> tuple[Workload, np.ndarray]:
    from htcsim.sim.failures import FAILURE_DTYPE

    jobs = empty_jobs(3)
    jobs["job_id"] = [1, 2, 3]
    jobs["submit_s"] = [0, 0, 5]
    jobs["run_s"] = [100, 100, 50]
    jobs["walltime_s"] = 1_000
    jobs["n_tasks"] = 1
    jobs["cores_per_task"] = 1
    workload = Workload(name="fail", jobs=jobs, machine=Machine(2, 1))
    return workload, np.array([(30, 0, 500)], dtype=FAILURE_DTYPE)


def _replayed_with_a_failure() -> SimResult:
    from htcsim.sim import simulate

    workload, failures = _three_jobs()
    return simulate(workload, Policy(), failures=failures)


def test_every_run_is_a_segment_with_its_nodes() -> None:
    result = _replayed_with_a_failure()
    jobs = result.workload.jobs
    rows = result.run_segments().to_frame(jobs["job_id"], np.ones(3, dtype=np.int64)).rows()
    assert rows == [
        # job, segment, start, end, run, cores, outcome, saved, lost, nodes
        (1, 0, 0, 30, 30, 1, "requeued", 0, 30, [0]),
        (1, 1, 100, 200, 100, 1, "completed", 0, 0, [1]),
        (2, 0, 0, 100, 100, 1, "completed", 0, 0, None),
        (3, 0, 200, 250, 50, 1, "completed", 0, 0, None),
    ]


def test_metrics_count_every_run_and_wait_to_the_first_start() -> None:
    from htcsim.metrics import per_job_table, summarize

    result = _replayed_with_a_failure()
    summary = summarize(result)
    assert summary["mean_wait_s"] == pytest.approx(65.0)
    assert summary["max_wait_s"] == 195.0
    assert summary["utilization"] == pytest.approx(0.56)
    assert summary["mean_requeue_wait_s"] == 70.0
    assert summary["mean_response_s"] == pytest.approx((200 + 100 + 245) / 3)
    assert summary["mean_bsld"] == pytest.approx((2.0 + 1.0 + 4.9) / 3)
    assert (summary["n_finished"], summary["n_node_failed"]) == (3, 0)
    table = per_job_table(result)
    assert table["first_start_s"].to_list() == [0, 0, 200]
    assert table["start_s"].to_list() == [100, 0, 200]  # the last run
    assert table["wait_s"].to_list() == [0, 0, 195]
    assert table["requeue_wait_s"].to_list() == [70, 0, 0]
    assert table["run_s"].to_list() == [130, 100, 50]
    assert table["requeues"].to_list() == [1, 0, 0]
    assert table["lost_core_s"].to_list() == [30, 0, 0]
    assert table["final_state"].to_list() == ["completed"] * 3


def test_the_time_series_shows_the_job_running_until_its_node_fails() -> None:
    """A runs from 0, queued again from 30 to 100; C queued 5 to 200."""
    series = _replayed_with_a_failure().time_series()
    assert series["time_s"].to_list() == [0, 5, 30, 100, 200, 250]
    assert series["running_jobs"].to_list() == [2, 2, 1, 1, 1, 0]
    assert series["busy_cores"].to_list() == [2, 2, 1, 1, 1, 0]
    assert series["queued_jobs"].to_list() == [0, 1, 2, 1, 0, 0]


def test_the_result_directory_holds_the_segments_and_the_new_columns(tmp_path: Path) -> None:
    import polars as pl

    from htcsim.report.results import write_results

    paths = write_results(_replayed_with_a_failure(), tmp_path / "out", plots=False)
    jobs = pl.read_csv(paths["jobs.csv"])
    assert jobs.select(
        "first_start_s", "wait_s", "requeue_wait_s", "requeues", "lost_core_s", "final_state"
    ).rows() == [
        (0, 0, 70, 1, 30, "completed"),
        (0, 0, 0, 0, 0, "completed"),
        (200, 195, 0, 0, 0, "completed"),
    ]
    segments = pl.read_parquet(paths["segments.parquet"])
    assert segments.select("job_id", "start_s", "end_s", "outcome").rows() == [
        (1, 0, 30, "requeued"),
        (1, 100, 200, "completed"),
        (2, 0, 100, "completed"),
        (3, 200, 250, "completed"),
    ]
    series = pl.read_parquet(paths["timeseries.parquet"])
    assert series.row(0, named=True)["queued_jobs"] == 0  # A runs at 0, it is not queued


def test_a_failed_node_holding_two_jobs_cuts_both_with_their_nodes() -> None:
    """2 two-core nodes, first fit: A (3 tasks) takes node 0 and a core of node 1,
    B (1 task) the other core of node 1. Node 1 fails at 40 for 1000 s: both are
    requeued. B backfills on node 0 at once (A cannot fit before the repair):
    40-140; A restarts at the repair, 1040-1140, on both nodes again."""
    from htcsim.sim import simulate
    from htcsim.sim.failures import FAILURE_DTYPE

    jobs = empty_jobs(2)
    jobs["job_id"] = [1, 2]
    jobs["run_s"] = 100
    jobs["walltime_s"] = 1_000
    jobs["n_tasks"] = [3, 1]
    jobs["cores_per_task"] = 1
    workload = Workload(name="two", jobs=jobs, machine=Machine(2, 2))
    failures = np.array([(40, 1, 1_000)], dtype=FAILURE_DTYPE)
    result = simulate(workload, Policy(), failures=failures)
    frame = result.run_segments().to_frame(jobs["job_id"], np.array([3, 1]))
    assert frame.select("job_id", "start_s", "end_s", "outcome", "nodes").rows() == [
        (1, 0, 40, "requeued", [0, 1]),
        (1, 1040, 1140, "completed", [0, 1]),
        (2, 0, 40, "requeued", [1]),
        (2, 40, 140, "completed", [0]),
    ]


def test_segments_do_not_change_the_schedule() -> None:
    """The recorder fails the nodes just before the feed would: the schedule is
    the one the feed alone gives (the kernel's own replay, driven by hand)."""
    from htcsim.sim.driver import ReplaySetup

    workload, failures = _three_jobs()
    result = _replayed_with_a_failure()
    setup = ReplaySetup(workload, Policy(), None, None, failures, 0)
    now = setup.feed.next_time()
    while now >= 0:
        now = setup.feed.step(now)
    assert setup.kernel.start_times().tolist() == result.start_s.tolist()
    assert setup.kernel.end_times().tolist() == result.end_s.tolist()


@pytest.mark.parametrize("boot_delay_s", [0, 120])
def test_every_run_of_a_job_a_failure_touched_has_its_nodes(boot_delay_s: int) -> None:
    """On the embedded workload with frequent failures and an autoscaled pool
    (a boot delay of 0 runs several passes in one step): the runs of the jobs
    a failure touched all have their node sets (each node a task of the job
    was on: as many nodes as the job needs at most), the others none; the
    segments add up to the kernel's run lost and saved per job."""
    from dataclasses import replace

    from htcsim.sim import simulate
    from htcsim.sim.failures import failure_model
    from htcsim.workload.loader import load_workload

    workload = load_workload(None, max_jobs=3000)
    policy = replace(
        Policy(),
        autoscale=True,
        autoscale_max_nodes=workload.machine.n_nodes,
        autoscale_boot_delay_s=boot_delay_s,
    )
    first = int(workload.jobs["submit_s"][0])
    failures = failure_model(
        workload.machine.n_nodes, 100 * 3600.0, 3600.0, 60 * 86_400, seed=5, start_s=first
    )
    result = simulate(workload, policy, failures=failures, checkpoint_s=900)
    runs = result.run_segments()
    touched = np.isin(runs.job_idx, runs.job_idx[runs.outcome <= 1])  # requeued or failed
    counts = np.diff(runs.node_offsets)
    assert touched.sum() > 100
    assert (counts[touched] > 0).all() and (counts[~touched] == 0).all()
    assert (counts <= workload.jobs["n_tasks"][runs.job_idx]).all()
    n = len(workload.jobs)
    assert (runs.per_job_sum(runs.lost_s, n) == result.lost_s).all()
    assert (runs.per_job_sum(runs.saved_s, n) == result.saved_s).all()
