"""The HTML comparison report: real replays written to result directories, read back.

Two runs of one synthetic workload (FCFS + EASY, SJF + conservative) are
written by ``write_results`` and compared. Node-state and cost columns are
added by hand where a test needs them, so what the report must show never
depends on whether the simulator of the day records them.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from htcsim.metrics import format_duration
from htcsim.policy import Policy
from htcsim.report.comparison_plots import NODE_STATES, comparison_figures
from htcsim.report.html import (
    ReportError,
    best_runs,
    format_metric,
    load_run,
    row_unit,
    run_labels,
    write_report,
)
from htcsim.report.results import summary_table, write_results
from htcsim.sim import simulate
from htcsim.workload.lublin import generate_lublin

PNG_URI = "data:image/png;base64,"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BASE_FIGURES = 3  # wait ECDF, utilization, queue length
POLICIES = {
    "fcfs-easy": Policy(order="fcfs", backfill="easy"),
    "sjf-conservative": Policy(order="sjf", backfill="conservative"),
}
NODE_COLUMNS = (*(column for column, _, _ in NODE_STATES), "nodes_up")
COST_COLUMNS = ("cost_per_h", "cost", "node_hours")


def _plain(out: Path) -> None:
    """Strip node and cost data: the layout every htcsim version writes."""
    series = pl.read_parquet(out / "timeseries.parquet")
    series.drop([c for c in (*NODE_COLUMNS, *COST_COLUMNS) if c in series.columns]).write_parquet(
        out / "timeseries.parquet"
    )
    (out / "nodes.csv").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def raw_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The two replays, exactly as write_results wrote them."""
    root = tmp_path_factory.mktemp("raw")
    workload = generate_lublin(400, 64, seed=1)
    dirs = []
    for name, policy in POLICIES.items():
        write_results(simulate(workload, policy), root / name, plots=False)
        dirs.append(root / name)
    return dirs


@pytest.fixture(scope="module")
def runs(raw_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The two replays without node or cost data."""
    root = tmp_path_factory.mktemp("plain")
    dirs = [Path(shutil.copytree(d, root / d.name)) for d in raw_runs]
    for d in dirs:
        _plain(d)
    return dirs


@pytest.fixture(scope="module")
def page(runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = write_report(runs, tmp_path_factory.mktemp("report") / "report.html")
    return out.read_text(encoding="utf-8")


def _summary(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "summary.json").read_text())


def _row(page: str, key: str) -> list[tuple[str, str]]:
    """(class, text) of each run's cell in the metrics row of ``key``."""
    row = re.search(rf"<tr><th><code>{re.escape(key)}</code>.*?</tr>", page)
    assert row is not None, f"no row for {key}"
    return re.findall(r'<td class="(num[^"]*)"[^>]*>(.*?)</td>', row.group(0))


def _images(page: str) -> list[bytes]:
    return [
        base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


# --------------------------------------------------------------------------- the page


def test_one_self_contained_html_page(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert page.count(PNG_URI) == BASE_FIGURES
    assert all(png.startswith(PNG_MAGIC) for png in _images(page))
    for external in ("<script", "<link", 'src="http', "url("):
        assert external not in page, external


def test_header_names_each_run_and_what_it_replayed(page: str, runs: list[Path]) -> None:
    for directory in runs:
        summary = _summary(directory)
        assert f"<th>{directory.name}</th>" in page
        assert summary["workload"] in page
        assert summary["policy_label"] in page
    assert "different workloads" not in page


def test_every_numeric_summary_figure_has_a_row(page: str, runs: list[Path]) -> None:
    for directory in runs:
        for key, value in _summary(directory)["metrics"].items():
            if value is None or isinstance(value, int | float):
                assert f"<code>{key}</code>" in page, key


def test_cells_show_each_runs_summary_values_in_run_order(page: str, runs: list[Path]) -> None:
    metrics = [_summary(d)["metrics"] for d in runs]
    mean_waits = [text for _, text in _row(page, "mean_wait_s")]
    assert mean_waits == [format_duration(m["mean_wait_s"]) for m in metrics]
    for key in ("n_jobs", "p95_wait_s", "mean_bsld", "utilization", "makespan_s"):
        shown = [text for _, text in _row(page, key)]
        assert shown == [html.escape(format_metric(key, m[key])) for m in metrics], key


def test_the_lower_mean_wait_is_highlighted(page: str, runs: list[Path]) -> None:
    waits = [_summary(d)["metrics"]["mean_wait_s"] for d in runs]
    assert format_duration(waits[0]) != format_duration(waits[1]), "the fixture must differ"
    classes = [css for css, _ in _row(page, "mean_wait_s")]
    winner = int(np.argmin(waits))
    assert "best" in classes[winner]
    assert "best" not in classes[1 - winner]
    assert all("best" not in css for css, _ in _row(page, "n_jobs")), "no direction, no judgement"


# --------------------------------------------------------------------------- optional data


def _with_node_data(source: Path, target: Path, *, nodes: bool, cost: bool) -> float:
    """A copy of ``source`` with synthetic node states and/or cumulative cost; returns the cost.

    64 one-core nodes: busy cores are allocated nodes, half the rest are off.
    Cost accrues 0.5 per provisioned node-hour.
    """
    shutil.copytree(source, target)
    series = pl.read_parquet(target / "timeseries.parquet")
    busy = series["busy_cores"]
    off = (64 - busy) // 2
    up = 64 - off
    dt_h = (series["time_s"].shift(-1) - series["time_s"]).fill_null(0) / 3600
    added = []
    if nodes:
        added += [
            busy.alias("nodes_allocated"),
            (64 - busy - off).alias("nodes_idle"),
            off.alias("nodes_off"),
            up.alias("nodes_up"),
        ]
    node_hours = (up * dt_h).cum_sum().shift(1).fill_null(0.0)
    if cost:
        added += [
            (0.5 * up).alias("cost_per_h"),
            (0.5 * node_hours).alias("cost"),
            node_hours.alias("node_hours"),
        ]
        pl.DataFrame(
            {
                "node_type": ["cpu-spot"],
                "nodes": [64],
                "node_hours": [node_hours[-1]],
                "price_per_hour": [0.5],
                "cost": [0.5 * node_hours[-1]],
            }
        ).write_csv(target / "nodes.csv")
    series.with_columns(added).write_parquet(target / "timeseries.parquet")
    summary = _summary(target)
    summary["metrics"]["cost"] = 0.5 * node_hours[-1]
    (target / "summary.json").write_text(json.dumps(summary))
    return float(0.5 * node_hours[-1])


@pytest.mark.parametrize(
    ("nodes", "cost", "expected"),
    [
        (False, False, []),
        (True, False, ["Nodes by state"]),
        (False, True, ["Cumulative cost"]),
        (True, True, ["Nodes by state", "Cumulative cost"]),
    ],
    ids=["neither", "nodes only", "cost only", "both"],
)
def test_each_optional_figure_needs_its_columns(
    runs: list[Path], tmp_path: Path, nodes: bool, cost: bool, expected: list[str]
) -> None:
    fake = tmp_path / "autoscaled"
    _with_node_data(runs[1], fake, nodes=nodes, cost=cost)
    plain, extended = load_run(runs[0], "plain"), load_run(fake, "autoscaled")
    captions = [caption for caption, _ in comparison_figures([plain, extended])]
    assert len(captions) == BASE_FIGURES + len(expected)
    for caption, prefix in zip(captions[BASE_FIGURES:], expected, strict=True):
        assert caption.startswith(prefix)
    assert (extended.node_types is not None) == cost


def test_node_states_and_cost_beside_a_run_without_them(runs: list[Path], tmp_path: Path) -> None:
    fake = tmp_path / "autoscaled"
    total = _with_node_data(runs[1], fake, nodes=True, cost=True)
    page = write_report([runs[0], fake], tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count(PNG_URI) == BASE_FIGURES + 2
    assert all(png.startswith(PNG_MAGIC) for png in _images(page))
    assert "<h2>Node types</h2>" in page and "cpu-spot" in page
    assert _row(page, "cost")[1][1] == format_metric("cost", total)


# --------------------------------------------------------------------------- errors


def test_a_directory_without_results_is_named_with_the_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    out = tmp_path / "r.html"
    with pytest.raises(ReportError, match=re.escape(str(empty))) as caught:
        write_report([empty], out)
    for name in ("summary.json", "jobs.parquet", "timeseries.parquet"):
        assert name in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert not out.exists(), "nothing is written on error"


def test_one_missing_file_is_the_one_named(runs: list[Path], tmp_path: Path) -> None:
    broken = Path(shutil.copytree(runs[0], tmp_path / "broken"))
    (broken / "jobs.parquet").unlink()
    with pytest.raises(
        ReportError, match=r"broken: not a result directory, missing jobs\.parquet$"
    ):
        write_report([runs[1], broken], tmp_path / "r.html")


def test_a_folder_of_runs_points_at_them(runs: list[Path]) -> None:
    with pytest.raises(ReportError, match="it holds result directories") as caught:
        write_report([runs[0].parent], runs[0].parent / "r.html")
    assert str(runs[0]) in str(caught.value)


def test_unreadable_contents_are_named(runs: list[Path], tmp_path: Path) -> None:
    bad_json = Path(shutil.copytree(runs[0], tmp_path / "bad-json"))
    (bad_json / "summary.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"summary\.json: not valid JSON"):
        write_report([bad_json], tmp_path / "r.html")
    no_queue = Path(shutil.copytree(runs[0], tmp_path / "no-queue"))
    series = pl.read_parquet(no_queue / "timeseries.parquet").drop("queued_jobs")
    series.write_parquet(no_queue / "timeseries.parquet")
    with pytest.raises(ReportError, match=r"timeseries\.parquet: no column queued_jobs"):
        write_report([no_queue], tmp_path / "r.html")
    with pytest.raises(ReportError, match="not a directory"):
        write_report([tmp_path / "nowhere"], tmp_path / "r.html")


# --------------------------------------------------------------------------- pieces


def test_labels_are_directory_names_lengthened_only_to_disambiguate(tmp_path: Path) -> None:
    a, b, c = tmp_path / "x" / "easy", tmp_path / "y" / "easy", tmp_path / "x" / "sjf"
    assert run_labels([a, c]) == ["easy", "sjf"]
    assert run_labels([a, b, c]) == ["x/easy", "y/easy", "sjf"]
    assert run_labels([a, a]) == ["easy", "easy (2)"]


def test_formats_and_judgements() -> None:
    assert format_metric("mean_wait_s", 18_000.0) == "5.0 h"
    assert format_metric("utilization", 0.6735) == "67.3%"
    assert format_metric("n_jobs", 20_000) == "20,000"
    assert format_metric("cost", None) == format_metric("cost", float("nan")) == "–"
    assert best_runs("mean_wait_s", [10.0, 5.0, None]) == {1}
    assert best_runs("utilization", [0.5, 0.7]) == {1}
    assert best_runs("makespan_s", [846_362.0, 843_382.0]) == set(), "both show 9.8 d"
    assert best_runs("node_boots", [1, 5]) == set()
    # one unit per row: the largest figure's (a report reads down a column of runs)
    assert row_unit("mean_wait_s", [4 * 86400.0, 6840.0, None]) == "d"
    assert format_metric("mean_wait_s", 6840.0, "d") == "0.079 d"
    assert row_unit("n_jobs", [1, 2]) is None
    assert best_runs("mean_wait_s", [4 * 86400.0, 6840.0, 7000.0]) == {1}


def test_the_summary_table_shows_each_row_of_durations_in_one_unit() -> None:
    """4.1 d beside 114 min used to read as "4.1 d | 114.0 min | 2.2 h"."""
    from rich.console import Console

    waits = [4.1 * 86400, 114 * 60, 2.2 * 3600]
    summaries = [(f"run{k}", {"mean_wait_s": w, "n_jobs": 10}) for k, w in enumerate(waits)]
    console = Console(width=200, record=True, color_system=None)
    console.print(summary_table(summaries))  # type: ignore[arg-type]
    row = next(line for line in console.export_text().splitlines() if "mean wait" in line)
    assert [c.strip() for c in row.split("│")[2:-1]] == ["4.1 d", "0.079 d", "0.092 d"]


# --------------------------------------------------------------------------- command


def _app() -> typer.Typer:
    from htcsim.cli.app import app

    return app


def test_command_reports_on_what_write_results_writes_today(
    raw_runs: list[Path], tmp_path: Path
) -> None:
    """Through the command, on the directories as written (node data or not, as recorded)."""
    out = tmp_path / "sub" / "cmp.html"
    args = [*map(str, raw_runs), "-o", str(out), "--title", "EASY vs conservative"]
    result = CliRunner().invoke(_app(), ["report", *args])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    page = out.read_text(encoding="utf-8")
    assert "<title>EASY vs conservative</title>" in page
    assert BASE_FIGURES <= page.count(PNG_URI) <= BASE_FIGURES + 2
    for key in _summary(raw_runs[0])["metrics"]:
        assert f"<code>{key}</code>" in page, key


def test_command_fails_with_code_2_naming_the_problem(runs: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["report", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "not a result directory" in " ".join(result.output.split())
    assert not (tmp_path / "r.html").exists()
    result = CliRunner().invoke(_app(), ["report", str(runs[0]), "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory" in " ".join(result.output.split())


# --------------------------------------------------------------------------- what was run


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two runs of the embedded workload, both fcfs+easy: one named, with
    seeded node failures and hourly checkpoints; one plain, unnamed. And a
    third from a failure trace file."""
    root = tmp_path_factory.mktemp("cli-runs")
    base = ["simulate", "--max-jobs", "300", "--no-plots"]
    failing = [*base, "--mtbf", "50", "--mttr", "1", "--failure-seed", "7"]
    failing += ["--checkpoint-interval", "3600", "--name", "with-failures"]
    trace = root / "failures.csv"
    trace.write_text("time_s,node,duration_s\n5000,0,3600\n9000,3,600\n")
    for args, out in (
        (failing, root / "failing"),
        (base, root / "plain"),
        ([*base, "--failures", str(trace)], root / "traced"),
    ):
        result = CliRunner().invoke(_app(), [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
    return root / "failing", root / "plain", root / "traced"


def test_summary_json_records_every_input_that_changes_the_result(
    cli_runs: tuple[Path, Path, Path],
) -> None:
    import hashlib

    failing, plain, traced = (_summary(d) for d in cli_runs)
    assert (failing["name"], plain["name"]) == ("with-failures", None)
    inputs = failing["inputs"]
    assert inputs["checkpoint_interval_s"] == 3600
    assert inputs["failure_source"] == {"model": "mtbf", "mtbf_h": 50.0, "mttr_h": 1.0, "seed": 7}
    assert inputs["failures"]["events"] > 0 and len(inputs["failures"]["sha256"]) == 64
    assert inputs["trace"] == {
        "embedded": {"n_jobs": 20_000, "n_procs": 256, "seed": 1, "load": 0.85}
    }
    assert inputs["loading"]["max_jobs"] == 300
    assert inputs["workload_sha256"] == plain["inputs"]["workload_sha256"]
    assert inputs["policy_sha256"] == plain["inputs"]["policy_sha256"]
    assert (plain["inputs"]["failures"], plain["inputs"]["checkpoint_interval_s"]) == (None, 0)
    file = cli_runs[2].parent / "failures.csv"
    assert traced["inputs"]["failure_source"]["trace"] == {
        "path": str(file.resolve()),
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
    }
    assert traced["inputs"]["failures"]["events"] == 2
    assert failing["policy"]["autoscale"] is False  # the autoscaler's settings are the policy's


def test_the_report_labels_runs_by_name_and_lists_the_inputs_that_differ(
    cli_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    failing, plain, _ = cli_runs
    page = write_report([failing, plain], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<title>htcsim report: with-failures vs plain</title>" in page
    runs = page[page.index("<h2>Runs</h2>") : page.index("<h2>Inputs that differ</h2>")]
    assert "MTBF 50.0 h, MTTR 1.0 h, seed 7" in runs
    assert "every 60.0 min" in runs  # checkpoints
    assert runs.count("<td>off</td>") == 2  # no autoscaler in either
    differ = page[page.index("<h2>Inputs that differ</h2>") : page.index("<h2>Metrics</h2>")]
    rows = dict(re.findall(r"<tr><th><code>([^<]+)</code></th>(.*?)</tr>", differ))
    assert set(rows) >= {
        "inputs.checkpoint_interval_s",
        "inputs.failure_source.seed",
        "inputs.failures.events",
    }
    assert rows["inputs.checkpoint_interval_s"] == "<td>3600</td><td>0</td>"
    assert not any(key.startswith(("policy.", "inputs.trace", "inputs.workload")) for key in rows)
    same = write_report([plain, plain], tmp_path / "same.html").read_text(encoding="utf-8")
    assert "None: every run was given the same inputs." in same
    assert "<th>plain</th><th>plain (2)</th>" in same
