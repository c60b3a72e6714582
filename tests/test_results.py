"""The result directory: every file written, readable, and holding what it should."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rich.console import Console

from htcsim.metrics import summarize
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.report.results import build_summary, summary_table, write_results
from htcsim.schedule import SimResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TABLES = (
    "jobs.parquet",
    "jobs.csv",
    "segments.parquet",
    "users.csv",
    "timeseries.parquet",
    "summary.json",
)
FIGURES = ("wait.png", "utilization.png", "queue.png")


def _result(n_jobs: int, span_days: float, *, seed: int = 7) -> SimResult:
    """A plausible random schedule on 16 cores: waits 0 to hours, one job never started."""
    rng = np.random.default_rng(seed)
    jobs = empty_jobs(n_jobs)
    jobs["job_id"] = np.arange(100, 100 + n_jobs)
    jobs["submit_s"] = np.sort(rng.integers(0, int(span_days * 86_400), n_jobs))
    jobs["run_s"] = rng.integers(0, 7_200, n_jobs)
    jobs["walltime_s"] = np.maximum(jobs["run_s"] + rng.integers(-600, 3_600, n_jobs), 60)
    jobs["n_tasks"] = rng.integers(1, 5, n_jobs)
    jobs["user_id"] = rng.integers(1, 6, n_jobs)
    jobs["group_id"] = 1
    jobs["recorded_wait_s"] = rng.integers(0, 600, n_jobs)
    wait = np.where(rng.random(n_jobs) < 0.3, 0, rng.exponential(3_000, n_jobs).astype(np.int64))
    start = jobs["submit_s"] + wait
    end = start + np.minimum(jobs["run_s"], jobs["walltime_s"])
    start[-1] = end[-1] = -1
    workload = Workload(
        name="random-16",
        jobs=jobs,
        machine=Machine(n_nodes=4, cores_per_node=4),
        header={"Computer": "toy cluster", "MaxProcs": "16", "Note": "made up"},
        dropped=Counter({"size <= 0": 3, "run time < 0": 2}),
        changed=Counter({"requested time unknown": 5}),
        skipped_lines=1,
    )
    return SimResult(workload, Policy(order="fcfs", backfill="easy"), start, end, 0.25)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimResult, dict[str, Path]]:
    result = _result(300, span_days=10)
    return result, write_results(result, tmp_path_factory.mktemp("run") / "out")


def test_every_file_written(written: tuple[SimResult, dict[str, Path]]) -> None:
    _, paths = written
    assert set(paths) == {*TABLES, "schedule.swf", *FIGURES}
    for name, path in paths.items():
        assert path.name == name and path.is_file() and path.stat().st_size > 0, name


def test_tables_readable(written: tuple[SimResult, dict[str, Path]]) -> None:
    result, paths = written
    n = len(result.workload)
    jobs = pl.read_parquet(paths["jobs.parquet"])
    assert jobs.height == n
    assert jobs["job_id"].to_list() == result.workload.jobs["job_id"].tolist()
    assert jobs["start_s"].null_count() == 1  # the job that never started
    assert pl.read_csv(paths["jobs.csv"]).height == n
    users = pl.read_csv(paths["users.csv"])
    assert users["jobs"].sum() == n
    assert users["core_hours"].to_list() == sorted(users["core_hours"].to_list(), reverse=True)
    ts = pl.read_parquet(paths["timeseries.parquet"])
    assert ts.columns == ["time_s", "busy_cores", "utilization", "queued_jobs", "running_jobs"]
    assert ts["queued_jobs"][-1] == 1  # never started: queued to the end


def test_summary_json(written: tuple[SimResult, dict[str, Path]]) -> None:
    result, paths = written
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["workload"] == "random-16"
    assert summary["policy"] == result.policy.to_dict()
    assert summary["policy_label"] == "fcfs+easy"
    assert summary["loading"] == {
        "dropped": {"run time < 0": 2, "size <= 0": 3},
        "changed": {"requested time unknown": 5},
        "skipped_lines": 1,
    }
    assert summary["machine"]["total_cores"] == 16
    assert summary["htcsim_version"]
    expected = summarize(result)
    assert summary["metrics"]["n_started"] == expected["n_started"] == len(result.workload) - 1
    assert summary["metrics"]["mean_wait_s"] == pytest.approx(expected["mean_wait_s"])


def test_summary_json_writes_null_for_undefined(tmp_path: Path) -> None:
    result = _result(5, span_days=1)
    result = SimResult(result.workload, result.policy, result.start_s, result.end_s)  # no timing
    assert math.isnan(build_summary(result)["metrics"]["jobs_per_second"])
    paths = write_results(result, tmp_path / "r", plots=False)
    metrics = json.loads(paths["summary.json"].read_text())["metrics"]
    assert metrics["jobs_per_second"] is None and metrics["replay_s"] is None
    assert not any((tmp_path / "r" / name).exists() for name in FIGURES)


def test_pngs_are_valid(written: tuple[SimResult, dict[str, Path]]) -> None:
    _, paths = written
    for name in FIGURES:
        data = paths[name].read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5_000, name  # a drawn figure, not an empty canvas


def test_schedule_swf_reads_back(written: tuple[SimResult, dict[str, Path]]) -> None:
    from htcsim.workload.swf import read_swf

    result, paths = written
    back = read_swf(paths["schedule.swf"])
    assert back.machine.total_cores == 16
    started = result.start_s >= 0
    # The never-started job has run -1 and is dropped on reading, and counted.
    assert len(back) == int(started.sum())
    assert sum(back.dropped.values()) == 1
    wait = (result.start_s - result.workload.jobs["submit_s"])[started]
    np.testing.assert_array_equal(np.sort(back.jobs["recorded_wait_s"]), np.sort(wait))


def test_plots_of_degenerate_results(tmp_path: Path) -> None:
    """One job, or none started: figures are still written (with a note), never a crash."""
    jobs = empty_jobs(1)
    jobs["n_tasks"], jobs["walltime_s"], jobs["submit_s"] = 1, 10, 100
    workload = Workload("one", jobs, Machine(1, 1))
    for start, end in ((100, 100), (-1, -1)):
        result = SimResult(workload, Policy(), np.array([start]), np.array([end]))
        paths = write_results(result, tmp_path / str(start))
        for name in FIGURES:
            assert paths[name].read_bytes().startswith(PNG_MAGIC)


def test_summary_table_formats_units() -> None:
    a = summarize(_result(200, span_days=3))
    b = dict(a, mean_wait_s=5 * 3_600.0, utilization=float("nan"))
    table = summary_table([("easy", a), ("other", b)], title="runs")
    console = Console(record=True, width=140)
    console.print(table)
    text = console.export_text()
    assert [c.header for c in table.columns] == ["metric", "easy", "other"]
    assert "mean wait" in text and "5.0 h" in text
    assert "%" in text and "–" in text  # a defined utilization, and an undefined one
    assert "jobs/h" in text and "jobs/s" in text
    assert f"{a['n_jobs']:,}" in text


def test_one_figure_process_draws_several_results_as_in_process(tmp_path: Path) -> None:
    """The figures drawn in the figure process (one process for several results, as
    ``htcsim simulate --backfill none,easy`` uses it) are the PNGs drawn in this one."""
    from htcsim.report.figure_process import FigureProcess
    from htcsim.report.figures import result_figures
    from htcsim.report.plots import draw_figures

    results = [_result(200, span_days=2, seed=seed) for seed in (1, 2)]
    with FigureProcess() as figures:
        written = [
            write_results(result, tmp_path / str(k), figures=figures)
            for k, result in enumerate(results)
        ]
    for k, (result, paths) in enumerate(zip(results, written, strict=True)):
        here = draw_figures(result_figures(result), _fresh(tmp_path / f"here{k}"))
        for name in FIGURES:
            assert paths[name].parent == tmp_path / str(k)
            assert paths[name].read_bytes() == here[name].read_bytes(), name


def _fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder


def test_a_figure_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    """The drawing process's failure reaches the caller, after the tables are written."""
    out = tmp_path / "out"
    (out / "queue.png").mkdir(parents=True)  # a folder where the figure goes
    with pytest.raises(OSError):
        write_results(_result(50, span_days=1), out)
    assert (out / "jobs.parquet").exists() and (out / "summary.json").exists()
