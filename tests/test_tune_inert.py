"""Searched fields that cannot change the schedule: named before the study, replayed once.

The README's example space searches ``autoscale_idle_s`` with autoscaling
off (never matters) and the fairshare weight beside FCFS and SJF (matters
under multifactor only). Both are named; and trials that differ only in what
cannot matter reuse one replay, with the same metrics as replaying them.
"""

from __future__ import annotations

import pytest

from htcsim.policy import Policy, effective_policy
from htcsim.sim import simulate
from htcsim.tune import Study, inert_parameters, parse_objective, split_workload
from htcsim.tune.objective import trial_metrics
from htcsim.tune.space import space_from_mapping
from htcsim.workload.lublin import generate_lublin

README_SPACE = {
    "order": {"choices": ["fcfs", "sjf", "multifactor"]},
    "backfill": {"choices": ["none", "easy", "conservative"]},
    "priority_weight_fairshare": {"low": 1.0, "high": 100000.0, "log": True},
    "autoscale_idle_s": {"low": 60, "high": 7200},
}


@pytest.fixture(scope="module")
def workload():  # type: ignore[no-untyped-def]
    return generate_lublin(1500, 64, seed=3)


DEFAULT = Policy()


def messages(data: dict, base: Policy = DEFAULT) -> dict[str, tuple[bool, str]]:  # type: ignore[type-arg]
    found = inert_parameters(space_from_mapping(data, base))
    return {p.name: (p.always, p.message) for p in found}


def test_the_readme_space_names_both_parameters_that_waste_trials() -> None:
    found = messages(README_SPACE)
    assert set(found) == {"autoscale_idle_s", "priority_weight_fairshare"}
    assert found["autoscale_idle_s"] == (
        True,
        "autoscale_idle_s cannot change the schedule: autoscaling is off "
        "(autoscale = false, not searched)",
    )
    always, text = found["priority_weight_fairshare"]
    assert not always
    assert text.startswith(
        "priority_weight_fairshare cannot change the schedule where the queue order is not "
        "multifactor (order = fcfs or sjf)"
    )


@pytest.mark.parametrize(
    ("data", "base", "name", "why"),
    [
        (
            {"backfill_depth": {"low": 0, "high": 50}},
            Policy(backfill="none"),
            "backfill_depth",
            "backfill is off (backfill = none, not searched)",
        ),
        (
            {"priority_weight_age": {"low": 0.0, "high": 10.0}},
            Policy(order="fcfs"),
            "priority_weight_age",
            "the queue order is not multifactor",
        ),
        (
            {"max_retries": {"low": 0, "high": 5}},
            Policy(),
            "max_retries",
            "no node fails in the replays",
        ),
        (
            {
                "autoscale": {"choices": [True, False]},
                "autoscale_step": {"low": 1, "high": 8},
            },
            Policy(),
            "autoscale_step",
            "where autoscaling is off (autoscale = false)",
        ),
        (
            {
                "order": {"choices": ["multifactor"]},
                "priority_weight_size": {"low": 0.0, "high": 10.0},
                "priority_favor": {"choices": ["small", "large"]},
            },
            Policy(),
            "priority_favor",
            "where the size weight is 0 (priority_weight_size = 0.0)",
        ),
    ],
)
def test_each_rule_of_the_policy_is_warned_of(
    data: dict,  # type: ignore[type-arg]
    base: Policy,
    name: str,
    why: str,
) -> None:
    found = messages(data, base)
    assert name in found and why in found[name][1], found


def test_a_space_whose_fields_all_matter_warns_of_nothing() -> None:
    space = {
        "order": {"choices": ["multifactor"]},
        "backfill": {"choices": ["easy", "conservative"]},
        "priority_weight_fairshare": {"low": 1.0, "high": 10.0},
        "backfill_depth": {"low": 0, "high": 20},
    }
    assert messages(space) == {}


def test_trials_of_one_effective_policy_are_replayed_once(workload) -> None:  # type: ignore[no-untyped-def]
    space = space_from_mapping(README_SPACE, Policy())
    result = Study(workload, space, parse_objective(["mean_bsld"])).run(30)
    rows = {r["number"]: r for r in result.trials}
    reused = [r for r in rows.values() if r["same_as"] is not None]
    assert reused and all(r["seconds"] == 0.0 for r in reused)
    replayed = [r for r in rows.values() if r["same_as"] is None]
    assert result.n_replayed == len(replayed) < len(rows)

    def effective(row):  # type: ignore[no-untyped-def]
        if "baseline" in row["params"]:
            from htcsim.tune import baselines

            policy = baselines(Policy())[row["params"]["baseline"]]
        else:
            policy = space.policy(row["params"])
        part = row["part"].removesuffix(":baseline")
        return part, effective_policy(policy, node_failures=False)

    for row in reused:
        first = rows[row["same_as"]]
        assert first["same_as"] is None and first["number"] < row["number"]
        assert effective(row) == effective(first)
        assert row["metrics"] == first["metrics"]
    distinct = {effective(r) for r in replayed}
    assert len(distinct) == len(replayed)  # no schedule replayed twice
    # a reused result is what replaying that trial gives
    row = next(r for r in reused if r["part"] == "train" and "baseline" not in r["params"])
    train, _ = split_workload(workload, 0.7)
    again = trial_metrics(simulate(train, space.policy(row["params"]), series_every_s=None))
    assert again == row["metrics"]
