"""Policy tuning: the space, the objectives, the study's guarantees, its outputs.

The study's promises, checked on a small synthetic trace:
* the tuned policy is at least as good as every baseline on the training
  part (the baselines lie in the space and seed the first population);
* no trial that breaks a constraint is chosen, and the default guard is
  there unless dropped;
* a trial whose effective policy was replayed already reuses that replay,
  and a searched field that cannot change the schedule is named;
* the same seed gives the same study, in-process, in a process pool or on a
  real Dask cluster;
* an interrupted study, resumed from its SQLite file, ends exactly as an
  uninterrupted one;
* the exported policy file, loaded back, reproduces the trial's metrics;
* the command's pool workers die with it when it is killed with SIGKILL.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from htcsim.cli.app import app
from htcsim.policy import Policy, load_policy
from htcsim.sim import simulate
from htcsim.tune import (
    ObjectiveError,
    SpaceError,
    Study,
    StudyStore,
    StudyStoreError,
    TrialRunner,
    parse_objective,
    split_workload,
    write_study,
)
from htcsim.tune.objective import jain_index, trial_metrics
from htcsim.tune.space import space_from_mapping
from htcsim.workload.lublin import generate_lublin

SPACE = {
    "order": {"choices": ["fcfs", "sjf", "multifactor"]},
    "backfill": {"choices": ["none", "easy", "conservative"]},
    "priority_weight_size": {"low": 0.0, "high": 5000.0},
}


@pytest.fixture(scope="module")
def workload():  # type: ignore[no-untyped-def]
    return generate_lublin(1500, 64, seed=3)


def small_study(workload, seed: int = 1, **kwargs) -> Study:  # type: ignore[no-untyped-def]
    space = space_from_mapping(SPACE, Policy())
    return Study(workload, space, parse_objective(["mean_bsld"]), seed=seed, **kwargs)


# ------------------------------------------------------------------ space


def test_space_decodes_and_encodes_points() -> None:
    space = space_from_mapping(
        {
            **SPACE,
            "priority_weight_fairshare": {"low": 1.0, "high": 10000.0, "log": True},
            "autoscale_idle_s": {"low": 60, "high": 600},
        },
        Policy(),
    )
    values = space.values(np.array([0.0, 0.99, 0.5, 0.5, 1.0]))
    assert values == {
        "order": "fcfs",
        "backfill": "conservative",
        "priority_weight_size": 2500.0,
        "priority_weight_fairshare": pytest.approx(100.0),
        "autoscale_idle_s": 600,
    }
    policy = space.policy(values)
    point = space.encode(policy)
    assert point is not None and space.values(point) == pytest.approx(values)
    assert space.encode(Policy(placement="spread")) is None  # a field the space keeps fixed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ordr": {"choices": ["fcfs"]}}, r"\[ordr\]: not a Policy field"),
        ({"order": {"choices": ["fcfs", "lifo"]}}, r"\[order\].*order must be one of"),
        ({"priority_weight_age": {"low": 5.0, "high": 1.0}}, "above high"),
        (
            {"priority_weight_age": {"low": 0.0, "high": 1.0, "log": True}},
            "log range needs low > 0",
        ),
        ({"backfill_depth": {"low": 0, "high": 5, "integer": False}}, "integer field"),
        ({"qos": {"choices": [1]}}, "cannot be searched"),
        ({"order": {"low": 1, "high": 2}}, "takes choices, not a range"),
        ({}, "names no parameter"),
    ],
)
def test_space_errors_name_the_parameter(data: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        space_from_mapping(data, Policy())


# ------------------------------------------------------------------ objective


def test_jain_index_by_hand() -> None:
    assert jain_index(np.array([2.0, 2.0, 2.0])) == 1.0
    assert jain_index(np.array([1.0, 0.0, 0.0, 0.0])) == 0.25
    assert jain_index(np.array([1.0, 3.0])) == pytest.approx(16 / (2 * 10))


def test_objective_signs_and_weights() -> None:
    goal = parse_objective(["mean_bsld", "utilization:2"])
    losses = goal.losses({"mean_bsld": 10.0, "utilization": 0.5})
    assert losses.tolist() == [10.0, -0.5]
    reference = {"mean_bsld": 20.0, "utilization": 0.25}
    assert goal.scalar({"mean_bsld": 10.0, "utilization": 0.5}, reference) == pytest.approx(
        10 / 20 + 2 * (-0.5 / 0.25)
    )
    assert goal.losses({"mean_bsld": math.nan, "utilization": 0.5})[0] == math.inf
    with pytest.raises(ObjectiveError, match="unknown metric 'slowdown'"):
        parse_objective(["slowdown"])
    with pytest.raises(ObjectiveError, match="weight"):
        parse_objective(["mean_bsld:-1"])
    with pytest.raises(ObjectiveError, match="at least two"):
        parse_objective(["mean_bsld"], pareto=True)


def test_split_keeps_order_and_drops_cross_part_dependencies(workload) -> None:  # type: ignore[no-untyped-def]
    jobs = workload.jobs.copy()
    jobs["preceding_job_id"][1100] = jobs["job_id"][10]  # a test job after a train job
    jobs["preceding_job_id"][20] = jobs["job_id"][10]  # inside the train part: kept
    train, test = split_workload(type(workload)(**{**workload.__dict__, "jobs": jobs}), 0.7)
    assert len(train.jobs) == 1050 and len(test.jobs) == 450
    assert train.jobs["preceding_job_id"][20] == jobs["job_id"][10]
    assert (test.jobs["preceding_job_id"] == -1).all()
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        split_workload(workload, 1.0)


# ------------------------------------------------------------------ study


def test_tuned_policy_beats_every_baseline_on_training(workload) -> None:  # type: ignore[no-untyped-def]
    result = small_study(workload).run(30)
    for name, (train, _) in result.baselines.items():
        assert result.best_train["mean_bsld"] <= train["mean_bsld"], name
    assert result.best_test  # judged on the test part too
    assert set(result.baselines) == {"fcfs", "fcfs+easy", "multifactor+easy"}


def test_same_seed_same_study_in_process_pool_and_dask(workload) -> None:  # type: ignore[no-untyped-def]
    from distributed import LocalCluster

    first = small_study(workload).run(20)
    train, test = split_workload(workload, 0.7)
    parts = {"train": train, "test": test}
    with TrialRunner(parts, workers=2) as pool:
        pooled = small_study(workload, runner=pool).run(20)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        TrialRunner(parts, dask_address=cluster.scheduler_address) as on_dask,
    ):
        dasked = small_study(workload, runner=on_dask).run(20)
    for other in (pooled, dasked):
        assert other.best_values == first.best_values
        assert [r["params"] for r in other.trials] == [r["params"] for r in first.trials]
        assert [r["metrics"] for r in other.trials] == [r["metrics"] for r in first.trials]
    assert small_study(workload, seed=2).run(20).trials != first.trials


class _Interrupted(Exception):
    pass


class _StopAfter(TrialRunner):
    """A runner that dies (as a killed process would) when ``limit`` replays
    have ended, in the middle of a batch: the replay that ends next is lost."""

    def __init__(self, parts, limit: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(parts)
        self.left = limit

    def run(self, trials, on_done=None):  # type: ignore[no-untyped-def]
        def counted(k, outcome):  # type: ignore[no-untyped-def]
            if self.left == 0:
                raise _Interrupted
            self.left -= 1
            if on_done is not None:
                on_done(k, outcome)

        return super().run(trials, counted)


def test_an_interrupted_study_resumes_to_the_same_result(workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Killed in the middle of the first generation (3 baseline replays, then 4
    of the 8 points of the first population): the 7 replays that ended are
    stored, each as it ended, and the resumed study replays only the rest."""
    whole = small_study(workload).run(25)
    identity = {"study": "resume"}
    path = tmp_path / "study.sqlite"
    train, test = split_workload(workload, 0.7)
    store = StudyStore(path, identity)
    with pytest.raises(_Interrupted):
        small_study(
            workload, store=store, runner=_StopAfter({"train": train, "test": test}, 7)
        ).run(25)
    store.close()
    kept = StudyStore(path, identity).rows()
    assert sum(1 for r in kept if r["same_as"] is None) == 7
    assert len(kept) < len(whole.trials)
    resumed = small_study(workload, store=StudyStore(path, identity)).run(25)
    assert resumed.best_values == whole.best_values
    assert resumed.best_train == whole.best_train and resumed.best_test == whole.best_test
    assert [r["params"] for r in resumed.trials] == [r["params"] for r in whole.trials]
    assert [r["same_as"] for r in resumed.trials] == [r["same_as"] for r in whole.trials]
    assert resumed.n_replayed == whole.n_replayed - 7
    with pytest.raises(StudyStoreError, match="holds another study"):
        StudyStore(path, {"study": "another"})


def test_a_study_file_of_an_older_htcsim_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE study (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE trials (number INTEGER PRIMARY KEY AUTOINCREMENT, part TEXT NOT NULL,"
            " params TEXT NOT NULL, metrics TEXT, error TEXT, seconds REAL NOT NULL,"
            " UNIQUE (part, params));"
        )
    db.close()
    with pytest.raises(StudyStoreError, match=r"older htcsim.*use a new --study file"):
        StudyStore(path, {"study": "x"})


def test_exported_policy_reproduces_the_trial_exactly(workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = small_study(workload).run(15)
    paths = write_study(result, tmp_path)
    policy = load_policy(paths["best_policy.toml"])
    assert policy == result.best_policy
    train, _ = split_workload(workload, 0.7)
    again = trial_metrics(simulate(train, policy, series_every_s=None))
    for name in ("mean_bsld", "p95_wait_s", "utilization", "fairness", "node_hours"):
        assert again[name] == result.best_train[name], name
    trials = pl.read_parquet(paths["trials.parquet"])
    assert {"part", "loss", "p_order", "p_backfill", "mean_bsld"} <= set(trials.columns)
    comparison = pl.read_csv(paths["comparison.csv"])
    assert comparison["policy"].to_list() == ["tuned", "fcfs", "fcfs+easy", "multifactor+easy"]
    assert comparison["train_mean_bsld"][0] == pytest.approx(result.best_train["mean_bsld"])


def test_pareto_front_is_non_dominated_and_deterministic(workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    space = space_from_mapping(SPACE, Policy())
    goal = parse_objective(["mean_bsld", "utilization"], pareto=True)
    result = Study(workload, space, goal, seed=4).run(24)
    again = Study(workload, space, goal, seed=4).run(24)
    assert [r["params"] for r in result.pareto] == [r["params"] for r in again.pareto]
    losses = [goal.losses(r["metrics"]) for r in result.pareto]
    assert losses
    for a in losses:
        for b in losses:
            assert not (np.all(b <= a) and np.any(b < a))
    paths = write_study(result, tmp_path)
    assert paths["pareto.png"].stat().st_size > 0
    assert len(pl.read_csv(paths["pareto.csv"])) == len(result.pareto)


# ------------------------------------------------------------------ command line


def test_tune_command_writes_the_study_and_resumes(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text(
        '[order]\nchoices = ["fcfs", "sjf"]\n\n[backfill]\nchoices = ["none", "easy"]\n'
    )
    out = tmp_path / "tune"
    args = ["tune", "--space", str(space), "--objective", "mean_bsld", "--trials", "10"]
    args += ["--max-jobs", "1000", "--workers", "1", "-o", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (out / "best_policy.toml").exists() and (out / "study.sqlite").exists()
    assert "tuned" in first.output and "fcfs" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 replays run now" in " ".join(again.output.split())
    policy = load_policy(out / "best_policy.toml")
    rerun = CliRunner().invoke(
        app, ["simulate", "--max-jobs", "700", "--policy", str(out / "best_policy.toml")]
    )
    assert rerun.exit_code == 0 and policy.label in rerun.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--objective", "bogus"], "unknown metric"),
        (["--objective", "mean_bsld", "--train-fraction", "1.5"], "in (0, 1)"),
        (["--objective", "mean_bsld", "--trials", "0"], "at least 1"),
    ],
)
def test_tune_command_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    space = tmp_path / "space.toml"
    space.write_text('[order]\nchoices = ["fcfs", "sjf"]\n')
    result = CliRunner().invoke(app, ["tune", "--space", str(space), *extra, "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_the_tuned_policy_is_judged_on_other_traces(workload, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = generate_lublin(800, 128, seed=9)
    space = space_from_mapping(SPACE, Policy())
    study = Study(workload, space, parse_objective(["mean_bsld"]), others={"other": other})
    result = study.run(10)
    study.close()
    assert set(result.others["other"]) == {"tuned", "fcfs", "fcfs+easy", "multifactor+easy"}
    direct = trial_metrics(simulate(other, result.best_policy, series_every_s=None))
    assert result.others["other"]["tuned"]["mean_bsld"] == direct["mean_bsld"]
    table = pl.read_csv(write_study(result, tmp_path)["comparison.csv"])
    assert table["other_mean_bsld"][0] == pytest.approx(direct["mean_bsld"])


def test_a_study_whose_trials_all_fail_says_why(tmp_path: Path) -> None:
    """Jobs larger than every autoscaler pool the space allows: the base policy's
    pool holds them (so the command starts), every trial's is refused by the kernel."""
    base = tmp_path / "base.toml"
    base.write_text("[autoscale]\nenabled = true\n")
    space = tmp_path / "space.toml"
    space.write_text("[autoscale_max_nodes]\nlow = 4\nhigh = 8\n")
    args = ["tune", "--max-jobs", "500", "--policy", str(base), "--space", str(space)]
    result = CliRunner().invoke(
        app,
        [
            *args,
            "--objective",
            "node_hours",
            "--trials",
            "5",
            "--workers",
            "1",
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert (
        "no trial of the study could be replayed" in text and "more than the whole cluster" in text
    )


def test_htcsim_simulate_with_the_exported_policy_gives_the_trial_metrics(tmp_path: Path) -> None:
    """Tune on the embedded workload's first 1,000 jobs (700 for training); then
    `htcsim simulate --max-jobs 700 --policy best_policy.toml --out` reports the
    training metrics of the best trial, exactly."""
    import json

    space = tmp_path / "space.toml"
    space.write_text(
        '[order]\nchoices = ["fcfs", "sjf"]\n\n[priority_weight_size]\nlow = 0.0\nhigh = 100.0\n'
    )
    out = tmp_path / "tune"
    tuned = CliRunner().invoke(
        app,
        [
            "tune",
            "--space",
            str(space),
            "--objective",
            "mean_bsld",
            "--trials",
            "8",
            "--max-jobs",
            "1000",
            "--workers",
            "1",
            "-o",
            str(out),
        ],
    )
    assert tuned.exit_code == 0, tuned.output
    comparison = pl.read_csv(out / "comparison.csv")
    replay = tmp_path / "replay"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--max-jobs",
            "700",
            "--policy",
            str(out / "best_policy.toml"),
            "--out",
            str(replay),
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((replay / "summary.json").read_text())["metrics"]
    for name in ("mean_bsld", "p95_wait_s", "utilization"):
        assert summary[name] == pytest.approx(comparison[f"train_{name}"][0], rel=1e-12), name
