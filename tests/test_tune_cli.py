"""``htcsim tune`` through the real process: warnings, constraints, outputs, a SIGKILL.

Each test runs ``python -m htcsim tune`` as a user would. The last one kills
a running study with SIGKILL, the one signal that runs no clean-up, and
checks that the pool workers it started end too (they used to run on,
blocked on a queue whose write end they held themselves), then that a rerun
resumes from every trial that had ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import psutil
import pytest

from tests.agent_harness import READY_S, wait_for
from tests.test_cli_errors import htcsim, one_error

README_SPACE = """\
[order]
choices = ["fcfs", "sjf", "multifactor"]

[backfill]
choices = ["none", "easy", "conservative"]

[priority_weight_fairshare]
low = 1.0
high = 100000.0
log = true

[autoscale_idle_s]
low = 60
high = 7200
"""


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(README_SPACE)
    return path


def tune(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return htcsim("tune", "--max-jobs", "800", "--workers", "1", *args, cwd=cwd)


def test_tune_names_inert_parameters_and_holds_the_default_guard(
    tmp_path: Path, space: Path
) -> None:
    out = tmp_path / "out"
    proc = tune(
        "--space", space, "--objective", "mean_bsld", "--trials", "20", "-o", out, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: priority_weight_fairshare cannot change the schedule where the queue order "
        "is not multifactor (order = fcfs or sjf); those trials reuse one replay per "
        "distinct policy",
        "warning: autoscale_idle_s cannot change the schedule: autoscaling is off "
        "(autoscale = false, not searched)",
    ]
    text = proc.stdout
    assert (
        "constraint: max_wait_s <= 1.5 * baseline (the default guard; --no-guard drops it)" in text
    )
    assert "constraint max_wait_s <= 1.5 * baseline (baseline fcfs+easy): max_wait_s <= " in text
    assert "distinct schedules" in text and "reused the replay of an equal policy" in text
    assert "autoscale_idle_s: no effect under the rest" in text
    comparison = pl.read_csv(out / "comparison.csv")
    assert comparison["train_constraints"][0] == "met"
    trials = pl.read_parquet(out / "trials.parquet")
    train = trials.filter(pl.col("part") == "train")
    assert {"feasible", "broken", "same_as"} <= set(trials.columns)
    infeasible = train.filter(~pl.col("feasible"))
    assert (infeasible["broken"] == "max_wait_s <= 1.5 * baseline").all()
    baseline_max = comparison.filter(pl.col("policy") == "fcfs+easy")["train_max_wait_s"][0]
    assert (infeasible["max_wait_s"] > 1.5 * baseline_max).all()
    assert (train.filter(pl.col("feasible"))["max_wait_s"] <= 1.5 * baseline_max).all()
    assert train["same_as"].drop_nulls().len() > 0


def test_without_the_guard_the_table_has_no_constraints(tmp_path: Path, space: Path) -> None:
    out = tmp_path / "out"
    proc = tune(
        "--space",
        space,
        "--objective",
        "mean_bsld",
        "--trials",
        "10",
        "--no-guard",
        "-o",
        out,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "constraint" not in proc.stdout
    assert "train_constraints" not in pl.read_csv(out / "comparison.csv").columns


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ("max_wait_s", "write METRIC <= VALUE"),
        ("slowdown <= 2", "unknown metric 'slowdown'"),
        ("max_wait_s = 2", "compare with <=, <, >= or >, not ="),
        ("max_wait_s <= 1.5 baseline", "cannot read '1.5 baseline'"),
    ],
)
def test_a_bad_constraint_is_one_line_before_any_work(
    tmp_path: Path, space: Path, constraint: str, message: str
) -> None:
    proc = tune(
        "--space", space, "--objective", "mean_bsld", "--constraint", constraint, cwd=tmp_path
    )
    line = one_error(proc)
    assert message in line and repr(constraint) in line
    assert proc.stdout == "" and not (tmp_path / "tune").exists()


def test_a_study_whose_trials_all_break_a_constraint_exits_1(tmp_path: Path, space: Path) -> None:
    proc = tune(
        "--space",
        space,
        "--objective",
        "mean_bsld",
        "--trials",
        "6",
        "--constraint",
        "mean_bsld < 1",
        "-o",
        tmp_path / "out",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: no trial met the constraints (max_wait_s <= 1.5 * baseline, ")
    assert not (tmp_path / "out" / "best_policy.toml").exists()


def _stored(path: Path) -> int:
    """Trials in the study file (0 while it does not exist yet)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being written
        return 0


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    """The pool's worker processes (spawned interpreters) under ``parent``."""
    return [
        child
        for child in parent.children(recursive=True)
        if "spawn_main" in " ".join(child.cmdline())
    ]


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_killed_with_sigkill_its_workers_end_and_a_rerun_resumes(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text(
        '[backfill]\nchoices = ["easy", "conservative"]\n\n'
        "[priority_weight_size]\nlow = 0.0\nhigh = 5000.0\n\n"
        "[priority_weight_age]\nlow = 0.0\nhigh = 5000.0\n"
    )
    base = tmp_path / "base.toml"
    base.write_text('[queue]\norder = "multifactor"\n')
    out = tmp_path / "out"
    args = ["tune", "--max-jobs", "2000", "--policy", str(base), "--space", str(space)]
    args += ["--objective", "mean_bsld", "--workers", "2", "-o", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "htcsim", *args, "--trials", "5000"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "250"},
    )
    try:
        parent = psutil.Process(proc.pid)

        # running: both workers up and the study past its baselines (3 replays)
        def running() -> list[psutil.Process] | None:
            found = _workers(parent)
            return found if len(found) == 2 and _stored(out / "study.sqlite") > 3 else None

        workers = wait_for(running, READY_S)
        pids = [w.pid for w in workers]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(READY_S)
        assert proc.stderr is not None
        proc.stderr.close()
    try:
        wait_for(lambda: _gone(pids), READY_S)
    finally:  # a failed check leaves no orphan behind (psutil checks a pid was not reused)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
    stored = _stored(out / "study.sqlite")
    assert stored > 3
    again = htcsim(*args, "--trials", "40", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming ({stored} trials stored)" in again.stdout
