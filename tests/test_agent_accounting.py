"""Accounting from the agent store: a hand-built history, its figures computed by hand."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from htcsim.agent.engine.accounting import (
    export_swf,
    parse_since,
    print_usage,
    render_usage,
    usage_report,
)
from htcsim.agent.store.jobs import AgentStore, NewJob
from htcsim.sim import simulate
from htcsim.workload.swf import read_swf

T = 1_700_000_000.0
"""Every time below is T + seconds, so the SWF header's UnixStartTime is T."""
SINCE, UNTIL = T + 1000, T + 5000  # a 4000 s window
CORES = 8


def add(store: AgentStore, submit: float, **kw: object) -> int:
    fields: dict = {  # type: ignore[type-arg]
        "user": "ana",
        "command": ["python", "a.py"],
        "cwd": "/tmp",
        "cores": 1,
        "walltime_s": 3600,
        "group": "lab",
        **kw,
    }
    return store.add_jobs([NewJob(**fields)], now=T + submit)[0]


def run(
    store: AgentStore, job: int, start: float | None, end: float, state: str, **kw: object
) -> None:
    if start is not None:
        store.set_state(job, "running", "started", now=T + start, start_time=T + start)
    store.set_state(job, state, "ended", now=T + end, end_time=T + end, **kw)


@pytest.fixture
def history(tmp_path: Path) -> tuple[AgentStore, dict[str, int]]:
    """Jobs (submit, start, end relative to T; the window is [1000, 5000)):

    old   ana  1 core   0 ->    0 ->  500  completed  (ended before the window: left out)
    j1    ana  2 cores  0 ->  600 -> 1600  completed  cpu 1800 s, rss 500 MiB, mem 1G
    j2    ana  4 cores  1000 -> 1100 -> 2900  failed
    j3    bo   1 core   1200 -> 1500 -> 4500  timeout cpu 3000 s, qos high, after old
    j4    bo   1 core   1300 -> never -> 1400 cancelled while pending
    j5    ana  4 cores  2000 -> 3000 -> 4800  completed cpu 7000 s, afterany j2
    late  cy   1 core   3000 -> 3000 -> 6000  completed  (ends after the window: left out)
    """
    store = AgentStore(tmp_path / "agent.db")
    ids: dict[str, int] = {}
    ids["old"] = add(store, 0)
    run(store, ids["old"], 0, 500, "completed", exit_code=0)
    ids["j1"] = add(store, 0, cores=2, mem_mib=1024)
    ids["j2"] = add(store, 1000, cores=4, command=["./sim", "-x"])
    ids["j3"] = add(
        store,
        1200,
        user="bo",
        group="phys",
        qos="high",
        walltime_s=3000,
        depends_on=((ids["old"], "afterok", 0),),
    )
    ids["j4"] = add(store, 1300, user="bo", group="phys")
    ids["j5"] = add(store, 2000, cores=4, depends_on=((ids["j2"], "afterany", 0),))
    ids["late"] = add(store, 3000, user="cy", group="")
    run(store, ids["j1"], 600, 1600, "completed", exit_code=0, cpu_time_s=1800.0, max_rss_mib=500.0)
    run(store, ids["j2"], 1100, 2900, "failed", exit_code=1)
    run(store, ids["j3"], 1500, 4500, "timeout", cpu_time_s=3000.0)
    run(store, ids["j4"], None, 1400, "cancelled")
    run(store, ids["j5"], 3000, 4800, "completed", exit_code=0, cpu_time_s=7000.0)
    run(store, ids["late"], 3000, 6000, "completed", exit_code=0)
    ids["pending"] = add(store, 4000, user="cy")
    return store, ids


def test_usage_per_user_group_and_overall(history: tuple[AgentStore, dict[str, int]]) -> None:
    store, _ = history
    report = usage_report(store, SINCE, UNTIL, total_cores=CORES)
    users = {row["user"]: row for row in report.users.iter_rows(named=True)}
    assert report.users.get_column("user").to_list() == ["ana", "bo"]  # by core hours
    ana, bo = users["ana"], users["bo"]
    assert (ana["jobs"], ana["completed"], ana["failed"], ana["cancelled"]) == (3, 2, 1, 0)
    # core seconds: 2 x 1000 + 4 x 1800 + 4 x 1800 = 16400
    assert ana["core_hours"] == pytest.approx(16400 / 3600, rel=1e-12)
    assert ana["cpu_hours"] == pytest.approx((1800 + 7000) / 3600, rel=1e-12)
    # waits 600, 100, 1000: p95 interpolates between 600 and 1000 at 0.9
    assert ana["mean_wait_s"] == pytest.approx(1700 / 3, rel=1e-12)
    assert (ana["median_wait_s"], ana["p95_wait_s"]) == (600.0, pytest.approx(960.0))
    # bo: the cancelled job counts, but has no wait and no core hours
    assert (bo["jobs"], bo["timeout"], bo["cancelled"], bo["completed"]) == (2, 1, 1, 0)
    assert bo["core_hours"] == pytest.approx(3000 / 3600, rel=1e-12)
    assert (bo["mean_wait_s"], bo["median_wait_s"], bo["p95_wait_s"]) == (300.0, 300.0, 300.0)

    groups = {row["group"]: row for row in report.groups.iter_rows(named=True)}
    assert set(groups) == {"lab", "phys"}
    assert groups["lab"]["core_hours"] == ana["core_hours"] and groups["phys"]["jobs"] == 2

    summary = report.summary.row(0, named=True)
    assert (summary["jobs"], summary["started"], summary["max_wait_s"]) == (5, 4, 1000.0)
    # waits 100, 300, 600, 1000: median 450, p95 at 2.85 -> 600 + 0.85 x 400
    assert (summary["mean_wait_s"], summary["median_wait_s"]) == (500.0, 450.0)
    assert summary["p95_wait_s"] == pytest.approx(940.0, rel=1e-12)
    # inside the window: j1 2 x 600 (started before it), j2 7200, j3 3000, j5 7200 = 18600
    assert report.utilization == pytest.approx(18600 / (CORES * 4000), rel=1e-12)
    assert summary["utilization"] == report.utilization


def test_reports_render_and_write_csv(
    history: tuple[AgentStore, dict[str, int]], tmp_path: Path
) -> None:
    store, _ = history
    report = usage_report(store, SINCE, UNTIL, total_cores=CORES)
    tables = render_usage(report)
    assert [t.title for t in tables][1:] == ["Per user (all columns: --csv)", "Per group"]
    console = Console(record=True, width=250)
    print_usage(report, console)
    text = console.export_text()
    assert "ana" in text and "phys" in text and "58.1" in text  # utilization, %
    paths = report.to_csv(tmp_path / "out")
    assert [p.name for p in paths] == ["users.csv", "groups.csv", "summary.csv"]
    users = pl.read_csv(tmp_path / "out" / "users.csv")
    assert users.get_column("user").to_list() == ["ana", "bo"]
    assert users.get_column("jobs").to_list() == [3, 2]


def test_an_empty_window_reports_zero(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    report = usage_report(store, T, T + 60, total_cores=4)
    assert report.users.height == 0 and report.utilization == 0.0
    assert report.summary.row(0, named=True)["jobs"] == 0
    with pytest.raises(ValueError, match="window is empty"):
        usage_report(store, T, T, total_cores=4)


def test_export_swf_fields_and_replay(
    history: tuple[AgentStore, dict[str, int]], tmp_path: Path
) -> None:
    store, _ = history
    path = tmp_path / "agent.swf"
    assert export_swf(store, SINCE, UNTIL, path, total_cores=CORES) == 5
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith(";")]
    for expected in (
        "; Version: 2.2",
        "; Computer: htcsim agent",
        "; MaxJobs: 5",
        f"; MaxProcs: {CORES}",
        f"; UnixStartTime: {int(T)}",
    ):
        assert expected in header
    rows = [[float(v) for v in line.split()] for line in lines if not line.startswith(";")]
    assert all(len(r) == 18 for r in rows)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    # j1: submit 0, wait 600, run 1000, 2 procs, cpu 1800/2, rss 500 MiB x 1024 / 2,
    # walltime 3600, 1 GiB over 2 procs in KB, completed, ana, lab, python, no qos
    assert rows[0] == [
        1, 0, 600, 1000, 2, 900, 256000, 2, 3600, 524288, 1, 1, 1, 1, -1, -1, -1, -1
    ]  # fmt: skip
    # j2: ./sim is executable 2, failed, no cpu/memory known
    assert rows[1] == [
        2, 1000, 100, 1800, 4, -1, -1, 4, 3600, -1, 0, 1, 1, 2, -1, -1, -1, -1
    ]  # fmt: skip
    # j3: bo/phys, qos high, timeout, its parent ("old") is not in the export
    assert rows[2] == [
        3, 1200, 300, 3000, 1, 3000, -1, 1, 3000, -1, 0, 2, 2, 1, 1, -1, -1, -1
    ]  # fmt: skip
    # j4: cancelled while pending: wait and run unknown
    assert rows[3][:5] == [4, 1300, -1, -1, 1] and rows[3][10] == 5
    # j5: after j2 (SWF job 2)
    assert rows[4][:4] == [5, 2000, 1000, 1800] and rows[4][16] == 2

    workload = read_swf(path)
    assert workload.unix_start_time == int(T) and workload.machine.total_cores == CORES
    assert workload.dropped == {"run_time_unknown": 1}  # the job that never started
    jobs = workload.jobs
    assert jobs["job_id"].tolist() == [1, 2, 3, 5]
    assert jobs["submit_s"].tolist() == [0, 1000, 1200, 2000]
    assert jobs["run_s"].tolist() == [1000, 1800, 3000, 1800]
    assert jobs["n_tasks"].tolist() == [2, 4, 1, 4]
    assert jobs["mem_mib_per_task"].tolist() == [512, 0, 0, 0]  # 1 GiB over 2 one-core tasks
    assert jobs["status"].tolist() == [1, 0, 0, 1]
    assert jobs["user_id"].tolist() == [1, 1, 2, 1]
    assert jobs["preceding_job_id"].tolist() == [-1, -1, -1, 2]
    assert jobs["recorded_wait_s"].tolist() == [600, 100, 300, 1000]

    result = simulate(workload)
    assert np.all(result.start_s >= jobs["submit_s"]) and np.all(result.end_s >= 0)
    assert (result.end_s - result.start_s).tolist() == [1000, 1800, 3000, 1800]
    assert result.start_s[3] >= result.end_s[1]  # j5 still waits for j2


def test_export_of_an_empty_window_is_a_valid_header(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    path = tmp_path / "empty.swf"
    assert export_swf(store, T, T + 60, path, total_cores=4) == 0
    assert "; MaxProcs: 4" in path.read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", T - 7 * 86_400),
        ("12h", T - 12 * 3600),
        ("30m", T - 1800),
        ("now", T),
        ("2026-11-01", datetime(2026, 11, 1).timestamp()),
        ("2026-11-01T08:30:00", datetime(2026, 11, 1, 8, 30).timestamp()),
        ("2026-11-01T08:30:00Z", 1_793_521_800.0),
        ("2026-11-01T08:30:00+01:00", 1_793_518_200.0),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, T) == expected


@pytest.mark.parametrize("bad", ["", "90", "yesterday", "7 fortnights", "2026-13-01"])
def test_parse_since_names_bad_text(bad: str) -> None:
    with pytest.raises(ValueError, match=f"cannot read {bad!r}"):
        parse_since(bad, T)
