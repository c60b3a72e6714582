"""The command line, through typer's runner and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from htcsim.cli.app import app

runner = CliRunner()


def test_simulate_with_no_argument_replays_the_embedded_workload() -> None:
    result = runner.invoke(app, ["simulate"])
    assert result.exit_code == 0, result.output
    assert "lublin-256-seed1: 20,000 jobs" in result.output
    assert "mean bounded slowdown" in result.output
    assert "fcfs+easy" in result.output


def test_generate_then_simulate_writes_every_output(tmp_path: Path) -> None:
    swf = tmp_path / "synth.swf"
    gen = ["generate", "lublin", "--jobs", "2000", "--procs", "64", "--seed", "1", "-o", str(swf)]
    assert runner.invoke(app, gen).exit_code == 0
    again = tmp_path / "again.swf"
    assert runner.invoke(app, [*gen[:-1], str(again)]).exit_code == 0
    assert swf.read_bytes() == again.read_bytes(), "same seed, same file"
    out = tmp_path / "results"
    result = runner.invoke(
        app, ["simulate", str(swf), "--backfill", "conservative", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in (
        "jobs.parquet",
        "jobs.csv",
        "summary.json",
        "schedule.swf",
        "wait.png",
        "utilization.png",
        "queue.png",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["n_jobs"] == 2000
    assert summary["policy"]["backfill"] == "conservative"


def test_several_backfill_modes_in_one_run(tmp_path: Path) -> None:
    swf = tmp_path / "htc.swf"
    gen = ["generate", "htc", "--jobs", "3000", "--nodes", "4", "--cores", "8", "-o", str(swf)]
    assert runner.invoke(app, gen).exit_code == 0
    out = tmp_path / "cmp"
    result = runner.invoke(
        app,
        [
            "simulate",
            str(swf),
            "--backfill",
            "none,easy,conservative",
            "-o",
            str(out),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    for mode in ("none", "easy", "conservative"):
        assert (out / mode / "summary.json").exists()
        assert f"fcfs+{mode}" in result.output


def test_a_malformed_log_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.swf"
    good = "1 0 -1 10 1 -1 -1 1 20 -1 1 1 1 -1 -1 -1 -1 -1"
    bad.write_text(f"; MaxProcs: 4\n{good}\n2 5 -1 10 1 -1 -1 x 20 -1 1 1 1 -1 -1 -1 -1 -1\n")
    result = runner.invoke(app, ["simulate", str(bad)])
    assert result.exit_code == 2
    assert "bad.swf:3" in result.output and "field 8" in result.output
    skipped = runner.invoke(app, ["simulate", str(bad), "--skip-bad-lines"])
    assert skipped.exit_code == 0, skipped.output
    assert "bad_line" in skipped.output


def test_an_unknown_backfill_mode_is_a_clear_error() -> None:
    result = runner.invoke(app, ["simulate", "--backfill", "eazy"])
    assert result.exit_code == 2
    assert "backfill must be one of none, easy, conservative; got 'eazy'" in result.output


def test_a_missing_trace_says_where_it_looked() -> None:
    result = runner.invoke(app, ["simulate", "no-such-log"])
    assert result.exit_code == 2
    assert "HTCSIM_TRACE_DIR" in result.output


@pytest.mark.trace
def test_traces_lists_the_logs(trace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTCSIM_TRACE_DIR", str(trace_dir))
    result = runner.invoke(app, ["traces"])
    assert result.exit_code == 0, result.output
    assert "KTH-SP2" in result.output and "28,476" in result.output


@pytest.mark.trace
def test_the_installed_command_replays_a_real_log(kth_excerpt: Path, tmp_path: Path) -> None:
    log = kth_excerpt
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "htcsim",
            "simulate",
            str(log),
            "--out",
            str(tmp_path / "r"),
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "5,000 jobs on 100 cores" in proc.stdout
    assert (tmp_path / "r" / "schedule.swf").exists()
