"""Run segments: the per-job figures they give, their table, and the time series
they drive, against hand computation and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcsim.metrics import summarize
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.schedule import SimResult, time_series
from htcsim.segments import (
    COMPLETED,
    FAILED,
    REQUEUED,
    RUNNING,
    RunSegments,
    final_segments,
    merge_segments,
)


def segments(rows: list[tuple[int, int, int, int, int, list[int]]]) -> RunSegments:
    """(job row, start, end, outcome, saved, nodes) rows, in any order."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r[5]) for r in rows], out=offsets[1:])
    return RunSegments(
        job_idx=np.array([r[0] for r in rows], dtype=np.int64),
        start_s=np.array([r[1] for r in rows], dtype=np.int64),
        end_s=np.array([r[2] for r in rows], dtype=np.int64),
        outcome=np.array([r[3] for r in rows], dtype=np.int8),
        saved_s=np.array([r[4] for r in rows], dtype=np.int64),
        node_offsets=offsets,
        nodes=np.array([n for r in rows for n in r[5]], dtype=np.int32),
    )


def test_merging_orders_by_job_then_start_and_keeps_each_node_set() -> None:
    cut = segments([(1, 0, 30, REQUEUED, 0, [4, 5]), (0, 10, 20, REQUEUED, 0, [7])])
    last = segments([(0, 40, 50, COMPLETED, 0, []), (1, 35, 60, COMPLETED, 0, [2])])
    merged = merge_segments(cut, last)
    assert merged.job_idx.tolist() == [0, 0, 1, 1]
    assert merged.start_s.tolist() == [10, 40, 0, 35]
    nodes = [
        merged.nodes[merged.node_offsets[k] : merged.node_offsets[k + 1]].tolist() for k in range(4)
    ]
    assert nodes == [[7], [], [4, 5], [2]]


def test_per_job_figures() -> None:
    """Job 0 ran 10-20, queued again 20-40, ran 40-50; job 1 failed after
    0-30 (checkpoint saved 20, but a failed run keeps nothing); job 2 never ran."""
    runs = segments(
        [
            (0, 10, 20, REQUEUED, 5, []),
            (0, 40, 50, COMPLETED, 0, []),
            (1, 0, 30, FAILED, 0, []),
        ]
    )
    assert runs.first_start(3).tolist() == [10, 0, -1]
    assert runs.requeue_wait_s(3).tolist() == [20, 0, 0]
    assert runs.per_job_sum(runs.run_s, 3).tolist() == [20, 30, 0]
    assert runs.lost_s.tolist() == [5, 0, 30]
    assert runs.busy_core_s(np.array([2, 1, 8])) == 20 * 2 + 30


def test_the_table_has_a_null_node_list_where_none_was_recorded() -> None:
    runs = segments([(0, 0, 5, REQUEUED, 0, [3]), (0, 9, -1, RUNNING, 0, [])])
    frame = runs.to_frame(np.array([42]), np.array([4]))
    assert frame.rows() == [
        (42, 0, 0, 5, 5, 4, "requeued", 0, 5, [3]),
        (42, 1, 9, None, None, 4, "running", 0, None, None),
    ]


def test_one_segment_per_started_job_without_failures() -> None:
    runs = final_segments(np.array([0, -1, 5]), np.array([10, -1, -1]))
    assert runs.job_idx.tolist() == [0, 2]
    assert runs.outcome.tolist() == [COMPLETED, RUNNING]


# --------------------------------------------------------------------------- brute force
#
# Per job: submit, then up to three runs, each (gap before it, length); every
# run but the last was cut short (requeued); the last may still be running
# (length None); a job may never start (no run).

_run = st.tuples(st.integers(0, 6), st.none() | st.integers(0, 6))
_job = st.tuples(st.integers(0, 20), st.lists(_run, max_size=3), st.integers(1, 3))


def _schedule(spec: list[tuple[int, list[tuple[int, int | None]], int]]) -> SimResult:
    jobs = empty_jobs(len(spec))
    jobs["job_id"] = np.arange(1, len(spec) + 1)
    jobs["submit_s"] = [s for s, _, _ in spec]
    jobs["n_tasks"] = [n for _, _, n in spec]
    jobs["cores_per_task"] = 1
    jobs["walltime_s"] = 100
    rows: list[tuple[int, int, int, int, int, list[int]]] = []
    start = np.full(len(spec), -1, dtype=np.int64)
    end = np.full(len(spec), -1, dtype=np.int64)
    for k, (submit, runs, _) in enumerate(spec):
        t = submit
        for i, (gap, length) in enumerate(runs):
            last = i == len(runs) - 1 or length is None
            begin = t + gap
            finish = -1 if length is None else begin + length
            outcome = (RUNNING if finish < 0 else COMPLETED) if last else REQUEUED
            rows.append((k, begin, finish, outcome, 0, []))
            start[k], end[k] = begin, finish
            if last:
                break
            t = finish
    jobs["run_s"] = np.where(end >= 0, end - start, 0)
    workload = Workload("brute", jobs, Machine(n_nodes=4, cores_per_node=2))
    order = sorted(range(len(rows)), key=lambda r: (rows[r][0], rows[r][1]))
    return SimResult(
        workload=workload,
        policy=Policy(),
        start_s=start,
        end_s=end,
        segments=segments([rows[r] for r in order]) if rows else segments([]),
    )


def _brute_state(result: SimResult, t: int) -> tuple[int, int, int]:
    """(busy cores, queued, running) after every event at time t, run by run."""
    jobs = result.workload.jobs
    runs = result.run_segments()
    busy = queued = running = 0
    for k in range(len(jobs)):
        rows = np.flatnonzero(runs.job_idx == k)
        mine = [(int(runs.start_s[r]), int(runs.end_s[r])) for r in rows]
        on = any(s <= t and (e < 0 or t < e) for s, e in mine)
        done = bool(mine) and 0 <= mine[-1][1] <= t and mine[-1][0] <= t
        if on:
            running += 1
            busy += int(jobs["n_tasks"][k])
        elif jobs["submit_s"][k] <= t and not done:
            queued += 1
    return busy, queued, running


@settings(max_examples=150, deadline=None)
@given(st.lists(_job, min_size=1, max_size=8))
def test_time_series_matches_brute_force(
    spec: list[tuple[int, list[tuple[int, int | None]], int]],
) -> None:
    result = _schedule(spec)
    series = time_series(result)
    runs = result.run_segments()
    events = set(result.workload.jobs["submit_s"].tolist())
    events |= {int(x) for x in runs.start_s} | {int(x) for x in runs.end_s if x >= 0}
    assert series["time_s"].to_list() == sorted(events)
    for row in series.iter_rows(named=True):
        assert (row["busy_cores"], row["queued_jobs"], row["running_jobs"]) == _brute_state(
            result, row["time_s"]
        ), row


@settings(max_examples=100, deadline=None)
@given(st.lists(_job, min_size=1, max_size=8))
def test_utilization_is_the_time_series_integral(
    spec: list[tuple[int, list[tuple[int, int | None]], int]],
) -> None:
    """Over [first submit, last end], with every run ended, the series' mean
    utilization is summarize's figure: both count every run."""
    spec = [(s, [(g, d if d is not None else 0) for g, d in runs], n) for s, runs, n in spec]
    result = _schedule(spec)  # type: ignore[arg-type]
    series = time_series(result)
    t = series["time_s"].to_numpy()
    utilization = summarize(result)["utilization"]
    ended = result.end_s[result.end_s >= 0]
    if not len(ended) or ended.max() == t[0]:
        return
    last = np.searchsorted(t, ended.max())
    util = series["utilization"].to_numpy()
    integral = np.sum(util[:last] * np.diff(t[: last + 1])) / (ended.max() - t[0])
    assert integral == pytest.approx(utilization)
