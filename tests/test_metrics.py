"""Metrics: hand-computed figures on a tiny schedule, and exactness against brute force.

The toy schedule (a 4-core machine, two 2-core nodes; times in seconds):

    job user submit start end  tasks  wait run  bsld
    1    7     0      0   100    4      0  100   1.0
    2    8    10    100   105    2     90    5   9.5   (run < 10 s: divided by 10)
    3    7    20    100   120    2     80   20   5.0   (recorded 30 s, killed at 20 s)
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcsim.metrics import (
    bounded_slowdown,
    format_duration,
    per_job_table,
    per_user,
    resample_time_series,
    row_duration_unit,
    summarize,
)
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.schedule import SimResult, time_series


def make_result(
    submit: list[int],
    start: list[int],
    end: list[int],
    n_tasks: list[int],
    *,
    cores_per_task: list[int] | None = None,
    run: list[int] | None = None,
    walltime: list[int] | None = None,
    user: list[int] | None = None,
    machine: Machine | None = None,
    replay_seconds: float = 0.0,
) -> SimResult:
    """A SimResult built by hand: no simulator, just the columns metrics read."""
    n = len(submit)
    jobs = empty_jobs(n)
    jobs["job_id"] = np.arange(1, n + 1)
    jobs["submit_s"] = submit
    jobs["n_tasks"] = n_tasks
    jobs["cores_per_task"] = cores_per_task if cores_per_task is not None else 1
    sim_run = [e - s if s >= 0 and e >= 0 else 0 for s, e in zip(start, end, strict=True)]
    jobs["run_s"] = run if run is not None else sim_run
    jobs["walltime_s"] = walltime if walltime is not None else np.maximum(jobs["run_s"], 1)
    jobs["user_id"] = user if user is not None else 0
    workload = Workload("toy", jobs, machine or Machine(n_nodes=2, cores_per_node=2))
    return SimResult(
        workload=workload,
        policy=Policy(),
        start_s=np.asarray(start, dtype=np.int64),
        end_s=np.asarray(end, dtype=np.int64),
        replay_seconds=replay_seconds,
    )


@pytest.fixture
def toy() -> SimResult:
    return make_result(
        submit=[0, 10, 20],
        start=[0, 100, 100],
        end=[100, 105, 120],
        n_tasks=[4, 2, 2],
        run=[100, 5, 30],
        walltime=[100, 60, 20],
        user=[7, 8, 7],
        replay_seconds=0.5,
    )


# --------------------------------------------------------------------------- summarize


def test_summarize_hand_computed(toy: SimResult) -> None:
    s = summarize(toy)
    assert s["n_jobs"] == 3 and s["n_started"] == 3 and s["n_finished"] == 3
    assert s["mean_wait_s"] == pytest.approx(170 / 3)
    assert s["median_wait_s"] == 80
    assert s["p95_wait_s"] == pytest.approx(89.0)  # sorted 0, 80, 90: 80 + 0.9 * (90 - 80)
    assert s["max_wait_s"] == 90
    assert s["mean_bsld"] == pytest.approx((1.0 + 9.5 + 5.0) / 3)
    assert s["median_bsld"] == 5.0
    assert s["mean_response_s"] == pytest.approx((100 + 95 + 100) / 3)
    assert s["makespan_s"] == 120
    assert s["utilization"] == pytest.approx((100 * 4 + 5 * 2 + 20 * 2) / (4 * 120))
    assert s["throughput_jobs_per_h"] == pytest.approx(3 / (120 / 3600))
    assert s["n_killed_at_walltime"] == 1
    assert s["replay_s"] == 0.5
    assert s["jobs_per_second"] == pytest.approx(6.0)
    assert all(isinstance(v, int | float) and not isinstance(v, np.generic) for v in s.values())


def test_summarize_counts_cores_per_task() -> None:
    # 2 tasks x 2 cores for 50 s on a 4-core machine, makespan 100 s: 200 / 400.
    r = make_result([0, 0], [0, 0], [50, 100], [2, 0], cores_per_task=[2, 1])
    assert summarize(r)["utilization"] == pytest.approx(0.5)


def test_summarize_partial_schedule() -> None:
    # job 2 running forever (no end), job 3 never started.
    r = make_result([0, 5, 6], [0, 10, -1], [20, -1, -1], [1, 1, 1])
    s = summarize(r)
    assert (s["n_jobs"], s["n_started"], s["n_finished"]) == (3, 2, 1)
    assert s["mean_wait_s"] == pytest.approx(2.5)
    assert s["mean_bsld"] == 1.0
    assert s["makespan_s"] == 20
    assert s["utilization"] == pytest.approx(20 / (4 * 20))
    assert math.isnan(s["jobs_per_second"]) and math.isnan(s["replay_s"])


def test_summarize_undefined_figures_are_nan() -> None:
    empty = summarize(make_result([], [], [], []))
    assert empty["n_jobs"] == 0
    for key in ("mean_wait_s", "p95_wait_s", "mean_bsld", "utilization", "makespan_s"):
        assert math.isnan(empty[key]), key
    zero_span = summarize(make_result([3, 3], [3, 3], [3, 3], [1, 1]))
    assert zero_span["makespan_s"] == 0
    assert math.isnan(zero_span["utilization"]) and math.isnan(zero_span["throughput_jobs_per_h"])
    assert zero_span["mean_bsld"] == 1.0


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ([5, 0], [6, 1], "job 2 .*starts before it is submitted"),
        ([0, 2], [1, 1], "job 2 .*ends before it starts"),
        ([0, -1], [1, 4], "job 2 .*has an end but no start"),
    ],
)
def test_invalid_schedule_names_the_job(start: list[int], end: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(make_result([0, 1], start, end, [1, 1]))


def test_misaligned_arrays_rejected(toy: SimResult) -> None:
    bad = SimResult(toy.workload, toy.policy, toy.start_s[:2], toy.end_s)
    with pytest.raises(ValueError, match="aligned"):
        summarize(bad)


# --------------------------------------------------------------------------- slowdown


@pytest.mark.parametrize(
    ("wait", "run", "expected"),
    [
        (0, 0, 1.0),  # run 0, no wait: the bound at 1
        (5, 0, 1.0),  # run 0, short wait: 5 / 10 < 1
        (30, 0, 3.0),  # run 0: denominator tau
        (0, 5, 1.0),  # run < tau, no wait: 0.5 bounded to 1
        (95, 5, 10.0),  # run < tau: (95 + 5) / 10
        (10, 10, 2.0),  # run == tau
        (100, 100, 2.0),  # ordinary slowdown
        (0, 3600, 1.0),
    ],
)
def test_bounded_slowdown_cases(wait: int, run: int, expected: float) -> None:
    assert bounded_slowdown(wait, run) == pytest.approx(expected)


def test_bounded_slowdown_vectorised_and_tau() -> None:
    got = bounded_slowdown(np.array([0, 30, 95]), np.array([0, 0, 5]), tau=5.0)
    np.testing.assert_allclose(got, [1.0, 6.0, 20.0])
    with pytest.raises(ValueError, match="tau"):
        bounded_slowdown(1, 1, tau=0.0)


# --------------------------------------------------------------------------- tables


def test_per_job_table(toy: SimResult) -> None:
    t = per_job_table(toy)
    assert t.columns == [
        "job_id",
        "user_id",
        "group_id",
        "submit_s",
        "start_s",
        "end_s",
        "wait_s",
        "run_s",
        "walltime_s",
        "n_tasks",
        "cores",
        "bounded_slowdown",
        "killed_at_walltime",
        "recorded_wait_s",
        "first_start_s",
        "requeue_wait_s",
        "requeues",
        "lost_core_s",
        "saved_core_s",
        "final_state",
    ]
    assert t["wait_s"].to_list() == [0, 90, 80]
    assert t["first_start_s"].to_list() == t["start_s"].to_list()  # one run each
    assert t["requeues"].to_list() == [0, 0, 0]
    assert t["final_state"].to_list() == ["completed", "completed", "timeout"]
    assert t["run_s"].to_list() == [100, 5, 20]
    assert t["cores"].to_list() == [4, 2, 2]
    assert t["bounded_slowdown"].to_list() == pytest.approx([1.0, 9.5, 5.0])
    assert t["killed_at_walltime"].to_list() == [False, False, True]
    assert t["recorded_wait_s"].null_count() == 3  # unknown (-1) in the workload


def test_per_job_table_unknowns_are_null() -> None:
    t = per_job_table(make_result([0, 5, 6], [0, 10, -1], [20, -1, -1], [1, 1, 1]))
    assert t["start_s"].to_list() == [0, 10, None]
    assert t["wait_s"].to_list() == [0, 5, None]
    assert t["end_s"].to_list() == [20, None, None]
    assert t["run_s"].to_list() == [20, None, None]
    assert t["bounded_slowdown"].to_list() == [1.0, None, None]
    assert t["final_state"].to_list() == ["completed", "running", "pending"]


def test_per_user(toy: SimResult) -> None:
    u = per_user(toy)
    assert u["user_id"].to_list() == [7, 8]  # by core-hours, largest first
    assert u["jobs"].to_list() == [2, 1]
    assert u["core_hours"].to_list() == pytest.approx([(400 + 40) / 3600, 10 / 3600])
    assert u["mean_wait_s"].to_list() == pytest.approx([40.0, 90.0])
    assert u["p95_wait_s"].to_list() == pytest.approx([76.0, 90.0])  # 0 + 0.95 * 80
    assert u["mean_bsld"].to_list() == pytest.approx([3.0, 9.5])


def test_per_user_ties_broken_by_user_id() -> None:
    r = make_result([0, 0, 0], [0, 0, 0], [10, 10, 10], [1, 1, 1], user=[9, 3, 5])
    assert per_user(r)["user_id"].to_list() == [3, 5, 9]


# --------------------------------------------------------------------------- over time


def test_time_series_toy(toy: SimResult) -> None:
    ts = time_series(toy)
    assert ts["time_s"].to_list() == [0, 10, 20, 100, 105, 120]
    assert ts["busy_cores"].to_list() == [4, 4, 4, 4, 2, 0]
    assert ts["queued_jobs"].to_list() == [0, 1, 2, 0, 0, 0]
    assert ts["running_jobs"].to_list() == [1, 1, 1, 2, 1, 0]
    assert ts["utilization"].to_list() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.0]


def test_time_series_empty() -> None:
    ts = time_series(make_result([], [], [], []))
    assert ts.height == 0 and ts.columns[0] == "time_s"
    assert resample_time_series(ts, 60).height == 0


# A small random schedule: per job (submit, wait or None = never starts,
# run or None = never ends, tasks, cores per task).
_job = st.tuples(
    st.integers(0, 30),
    st.none() | st.integers(0, 8),
    st.none() | st.integers(0, 8),
    st.integers(1, 3),
    st.integers(1, 2),
)
_schedules = st.lists(_job, min_size=1, max_size=10)


def _from_tuples(spec: list[tuple[int, int | None, int | None, int, int]]) -> SimResult:
    submit = [j[0] for j in spec]
    start = [j[0] + j[1] if j[1] is not None else -1 for j in spec]
    end = [
        s + j[2] if s >= 0 and j[2] is not None else -1 for s, j in zip(start, spec, strict=True)
    ]
    return make_result(
        submit, start, end, [j[3] for j in spec], cores_per_task=[j[4] for j in spec]
    )


def _brute_state(r: SimResult, t: int) -> tuple[int, int, int]:
    """(busy cores, queued, running) after every event at time t, job by job."""
    jobs = r.workload.jobs
    busy = queued = running = 0
    for k in range(len(jobs)):
        start, end = int(r.start_s[k]), int(r.end_s[k])
        started = 0 <= start <= t
        ended = started and 0 <= end <= t
        if jobs["submit_s"][k] <= t and not started:
            queued += 1
        if started and not ended:
            running += 1
            busy += int(jobs["n_tasks"][k]) * int(jobs["cores_per_task"][k])
    return busy, queued, running


@settings(max_examples=150, deadline=None)
@given(_schedules)
def test_time_series_matches_brute_force(
    spec: list[tuple[int, int | None, int | None, int, int]],
) -> None:
    r = _from_tuples(spec)
    ts = time_series(r)
    events = set(r.workload.jobs["submit_s"].tolist())
    events |= {int(x) for x in r.start_s if x >= 0} | {int(x) for x in r.end_s if x >= 0}
    assert ts["time_s"].to_list() == sorted(events)
    for row in ts.iter_rows(named=True):
        busy, queued, running = _brute_state(r, row["time_s"])
        assert (row["busy_cores"], row["queued_jobs"], row["running_jobs"]) == (
            busy,
            queued,
            running,
        ), row
        assert row["utilization"] == busy / r.workload.machine.total_cores


@settings(max_examples=100, deadline=None)
@given(_schedules, st.integers(1, 15))
def test_resample_matches_per_second_means(
    spec: list[tuple[int, int | None, int | None, int, int]], bin_s: int
) -> None:
    """Event times are whole seconds, so a bin's time-weighted mean is the mean of
    the state sampled at each whole second of the bin."""
    r = _from_tuples(spec)
    ts = time_series(r)
    binned = resample_time_series(ts, bin_s)
    t0, t_last = int(ts["time_s"][0]), int(ts["time_s"][-1])
    first_edge = t0 - t0 % bin_s
    starts = list(range(first_edge, t_last, bin_s)) or [t0]
    assert binned["time_s"].to_list() == starts
    edges = [*starts, t_last] if t_last > first_edge else [t0, t0 + bin_s]
    for i, row in enumerate(binned.iter_rows(named=True)):
        samples = [_brute_state(r, x) for x in range(edges[i], edges[i + 1])]
        busy, queued, running = np.mean(np.array(samples, dtype=np.float64), axis=0)
        assert row["busy_cores"] == pytest.approx(busy)
        assert row["queued_jobs"] == pytest.approx(queued)
        assert row["running_jobs"] == pytest.approx(running)


@settings(max_examples=100, deadline=None)
@given(_schedules)
def test_time_series_integral_is_summary_utilization(
    spec: list[tuple[int, int | None, int | None, int, int]],
) -> None:
    """Over [first submit, last end] the series' mean utilization is summarize's figure."""
    spec = [
        (s, w if w is not None else 0, d if d is not None else 0, n, c) for s, w, d, n, c in spec
    ]
    r = _from_tuples(spec)
    ts = time_series(r)
    t = ts["time_s"].to_numpy()
    util = summarize(r)["utilization"]
    if t[-1] == t[0]:
        assert math.isnan(util)
        return
    integral = np.sum(ts["utilization"].to_numpy()[:-1] * np.diff(t)) / (t[-1] - t[0])
    assert integral == pytest.approx(util)


def test_resample_rejects_bad_bin(toy: SimResult) -> None:
    with pytest.raises(ValueError, match="bin_s"):
        resample_time_series(time_series(toy), 0)


def test_resample_toy(toy: SimResult) -> None:
    binned = resample_time_series(time_series(toy), 60)
    assert binned["time_s"].to_list() == [0, 60]
    # [0, 60): 4 busy throughout; [60, 120): 4 for 45 s, 2 for 15 s.
    assert binned["busy_cores"].to_list() == pytest.approx([4.0, (4 * 45 + 2 * 15) / 60])
    assert binned.schema["queued_jobs"] == pl.Float64


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0 s"), (45, "45 s"), (750, "12.5 min"), (3 * 3600, "3.0 h"), (5 * 86400, "5.0 d")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_in_a_given_unit_keeps_small_figures_readable() -> None:
    """A summary row's unit is its largest figure's; the others keep two significant
    digits rather than reading 0.0."""
    assert format_duration(4 * 3600, "d") == "0.17 d"
    assert format_duration(600, "h") == "0.17 h"
    assert format_duration(5400, "h") == "1.5 h"
    assert format_duration(36, "h") == "0.010 h"
    assert format_duration(0, "d") == "0.0 d"
    assert format_duration(90, "s") == "90 s"
    assert row_duration_unit([600.0, None, float("nan"), 3 * 86400.0]) == "d"
    assert row_duration_unit([None, float("nan")]) is None
