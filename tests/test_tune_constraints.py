"""Constraints of a study: read safely, judged against the baseline, never chosen when broken.

On the small synthetic trace of ``test_tune``, the unconstrained study picks
SJF with EASY, whose longest wait is 7% above FCFS+EASY's: bounding the
longest wait by the baseline's must pick another policy, one that meets it,
the best of those that do. The Pareto plot is read back from its figure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.tune import (
    DEFAULT_GUARD,
    Constraint,
    ConstraintError,
    NoFeasibleTrial,
    Study,
    parse_constraint,
    parse_objective,
    split_workload,
    study_constraints,
)
from htcsim.tune.objective import trial_metrics, wait_percentile
from htcsim.tune.plot import pareto_figure
from htcsim.tune.space import space_from_mapping
from htcsim.workload.lublin import generate_lublin
from tests.test_tune import SPACE


@pytest.fixture(scope="module")
def workload():  # type: ignore[no-untyped-def]
    return generate_lublin(1500, 64, seed=3)


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_wait_s <= 1.5 * baseline", Constraint("max_wait_s", "<=", 1.5, True)),
        ("fairness>=0.8*baseline", Constraint("fairness", ">=", 0.8, True)),
        ("p99_wait_s < baseline * 2", Constraint("p99_wait_s", "<", 2.0, True)),
        ("mean_bsld <= baseline", Constraint("mean_bsld", "<=", 1.0, True)),
        ("p99_wait_s <= 2d", Constraint("p99_wait_s", "<=", 172_800.0, False)),
        ("max_wait_s <= 36000", Constraint("max_wait_s", "<=", 36_000.0, False)),
        ("utilization > 0.7", Constraint("utilization", ">", 0.7, False)),
    ],
)
def test_constraints_are_read(text: str, expected: Constraint) -> None:
    assert parse_constraint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_wait_s", "write METRIC <= VALUE"),
        ("max_wait <= 2", "unknown metric 'max_wait'"),
        ("max_wait_s == 2", "compare with <=, <, >= or >, not =="),
        ("max_wait_s <= ", "no value after <="),
        ("max_wait_s <= 2 * baseline * 3", "one factor of baseline, not two"),
        ("max_wait_s <= 0 * baseline", "factor of baseline must be > 0"),
        ("utilization >= 2d", "cannot read '2d'; give a number or FACTOR * baseline"),
        ("max_wait_s <= __import__('os').getcwd()", "cannot read"),
        ("max_wait_s <= inf", "the bound must be finite"),
    ],
)
def test_a_bad_constraint_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConstraintError) as caught:
        parse_constraint(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert repr(text) in str(caught.value)


def test_violations_are_relative_to_the_bound() -> None:
    guard = parse_constraint("max_wait_s <= 1.5 * baseline")
    baseline = {"max_wait_s": 100.0, "fairness": 0.4}
    assert guard.bound(baseline) == 150.0
    assert guard.violation({"max_wait_s": 150.0}, baseline) == 0.0
    assert guard.violation({"max_wait_s": 300.0}, baseline) == pytest.approx(1.0)
    assert guard.violation({"max_wait_s": math.inf}, baseline) == math.inf
    assert guard.violation({}, baseline) == math.inf
    fair = parse_constraint("fairness >= 0.5 * baseline")
    assert fair.violation({"fairness": 0.1}, baseline) == pytest.approx(0.5)
    strict = parse_constraint("max_wait_s < baseline")
    assert strict.violation({"max_wait_s": 100.0}, baseline) > 0


def test_the_default_guard_is_kept_unless_dropped_or_replaced() -> None:
    assert [c.text for c in study_constraints([])] == [DEFAULT_GUARD]
    assert study_constraints([])[0].default
    assert study_constraints([], guard=False) == ()
    mine = study_constraints(["max_wait_s <= 3 * baseline", "fairness >= 0.1"])
    assert [c.text for c in mine] == ["max_wait_s <= 3 * baseline", "fairness >= 0.1"]
    assert [c.text for c in study_constraints(["fairness >= 0.1"])] == [
        DEFAULT_GUARD,
        "fairness >= 0.1",
    ]


def test_p99_wait_is_the_percentile_of_the_started_jobs_waits(workload) -> None:  # type: ignore[no-untyped-def]
    train, _ = split_workload(workload, 0.7)
    result = simulate(train, Policy(), series_every_s=None)
    metrics = trial_metrics(result)
    started = result.start_s >= 0
    waits = (result.start_s - train.jobs["submit_s"])[started]
    assert metrics["p99_wait_s"] == float(np.percentile(waits, 99))
    assert wait_percentile(result, 95.0) == metrics["p95_wait_s"]  # as the summary's


# ------------------------------------------------------------------ studies


def study(workload, constraints=(), goal=("mean_bsld",), pareto=False, seed=1):  # type: ignore[no-untyped-def]
    space = space_from_mapping(SPACE, Policy())
    objective = parse_objective(list(goal), pareto)
    return Study(workload, space, objective, seed=seed, constraints=tuple(constraints))


def test_a_constrained_study_never_chooses_a_trial_that_breaks_it(workload) -> None:  # type: ignore[no-untyped-def]
    free = study(workload).run(30)
    baseline = free.baselines["fcfs+easy"][0]
    assert free.best_train["max_wait_s"] > baseline["max_wait_s"]  # what the guard is for
    bound = parse_constraint("max_wait_s <= baseline")
    result = study(workload, [bound]).run(30)
    assert result.baseline == "fcfs+easy"
    assert result.best_train["max_wait_s"] <= baseline["max_wait_s"]
    assert result.broken(result.best_train) == []
    train = [r for r in result.trials if r["part"] == "train" and r["metrics"]]
    feasible = [r for r in train if r["violation"] == 0]
    infeasible = [r for r in train if r["violation"] > 0]
    assert infeasible and feasible
    assert all(r["metrics"]["max_wait_s"] > baseline["max_wait_s"] for r in infeasible)
    best = min(r["metrics"]["mean_bsld"] for r in feasible)
    assert result.best_train["mean_bsld"] == best
    assert min(r["metrics"]["mean_bsld"] for r in infeasible) < best  # the bound bit
    assert result.best_train["mean_bsld"] > free.best_train["mean_bsld"]


def test_a_study_no_trial_of_which_meets_its_constraints_says_so(workload) -> None:  # type: ignore[no-untyped-def]
    impossible = parse_constraint("mean_bsld < 1")  # a bounded slowdown is at least 1
    with pytest.raises(NoFeasibleTrial, match=r"no trial met the constraints \(mean_bsld < 1"):
        study(workload, [impossible]).run(10)


def test_the_pareto_front_holds_feasible_trials_only(workload) -> None:  # type: ignore[no-untyped-def]
    guard = parse_constraint("max_wait_s <= baseline")
    result = study(workload, [guard], ("mean_bsld", "utilization"), pareto=True, seed=4).run(24)
    again = study(workload, [guard], ("mean_bsld", "utilization"), pareto=True, seed=4).run(24)
    assert [r["params"] for r in result.pareto] == [r["params"] for r in again.pareto]
    assert result.pareto and all(r["violation"] == 0 for r in result.pareto)
    assert any(r["violation"] > 0 for r in result.trials if r["part"] == "train")
    assert result.broken(result.best_train) == []


def test_the_pareto_plot_shows_every_baseline_on_log_axes_and_the_choice(workload) -> None:  # type: ignore[no-untyped-def]
    guard = parse_constraint("max_wait_s <= 1.5 * baseline")
    result = study(workload, [guard], ("max_wait_s", "mean_bsld"), pareto=True, seed=4).run(24)
    figure = pareto_figure(result)
    (ax,) = figure.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel().startswith("max_wait (hours)")
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for name, (train, _) in result.baselines.items():
        x, y = train["max_wait_s"] / 3600.0, train["mean_bsld"]
        assert x_low < x < x_high and y_low < y < y_high, name
        assert any(label.startswith(f"{name}: {x:.3g} h") for label in labels), labels
    chosen = result.best_train["max_wait_s"] / 3600.0
    assert any(label.startswith(f"chosen: {chosen:.3g} h") for label in labels), labels
    bound = 1.5 * result.baselines["fcfs+easy"][0]["max_wait_s"] / 3600.0
    assert f"max_wait_s <= 1.5 * baseline ({bound:.3g} h)" in labels


def test_a_base_policy_of_its_own_is_the_baseline(workload) -> None:  # type: ignore[no-untyped-def]
    """A base policy none of the usual baselines schedules as (conservative
    backfilling) is compared as ``base``, and the constraints are relative to it."""
    base = Policy(backfill="conservative")
    space = space_from_mapping({"order": {"choices": ["fcfs", "sjf"]}}, base)
    guard = parse_constraint("max_wait_s <= baseline")
    result = Study(workload, space, parse_objective(["mean_bsld"]), constraints=(guard,)).run(6)
    assert list(result.baselines) == ["base", "fcfs", "fcfs+easy", "multifactor+easy"]
    assert result.baseline == "base"
    train, _ = split_workload(workload, 0.7)
    direct = trial_metrics(simulate(train, base, series_every_s=None))
    assert result.baselines["base"][0]["max_wait_s"] == direct["max_wait_s"]
    assert result.best_train["max_wait_s"] <= direct["max_wait_s"]
