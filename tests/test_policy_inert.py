"""The policy's rules of which fields cannot change a schedule, held to the simulator.

Each rule of ``INERT_RULES`` is replayed both ways on a congested synthetic
trace: where the rule applies, every field it names set to another value
gives the very same schedule (and the same effective policy); where it does
not apply, the same change gives another schedule, so the trace is one on
which those fields matter and the first check could fail.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from htcsim.model import Workload
from htcsim.policy import (
    INERT_RULES,
    NODE_FAILURE_SETTINGS,
    Policy,
    QoS,
    effective_policy,
    inert_fields,
)
from htcsim.sim import simulate
from htcsim.sim.failures import failure_model
from htcsim.workload.lublin import generate_lublin

OTHER_VALUE: dict[str, Any] = {
    "autoscale_min_nodes": 8,
    "autoscale_max_nodes": 64,
    "autoscale_node_min": {"node": 4},
    "autoscale_node_max": {"node": 64},
    "autoscale_wait_s": 60,
    "autoscale_boot_delay_s": 900,
    "autoscale_idle_s": 120,
    "autoscale_cooldown_s": 30,
    "autoscale_step": 2,
    "autoscale_interval_s": 600,
    "priority_weight_age": 10.0,
    "priority_weight_size": 5000.0,
    "priority_weight_fairshare": 20000.0,
    "priority_weight_qos": 50000.0,
    "priority_max_age_s": 600,
    "priority_favor": "large",
    "priority_interval_s": 60,
    "nice": {"3": 5000.0},
    "fairshare_algorithm": "fair_tree",
    "fairshare_half_life_s": 600,
    "user_shares": {"3": 50.0, "7": 20.0},
    "group_shares": {"1": 5.0},
    "backfill_depth": 1,
    "slurm_backfill_interval_s": 30,
    "slurm_priority_phase_s": 17,
    "max_retries": 1,
}
"""A value other than the default for every field a rule names."""

MULTIFACTOR = Policy(order="multifactor", priority_weight_size=1000.0)
QOS = (QoS("urgent", priority=10.0, queues=(2,)),)

WHERE: dict[str, tuple[Policy, Policy]] = {
    "autoscaling is off": (Policy(), Policy(autoscale=True)),
    "the queue order is not multifactor": (
        Policy(order="sjf", qos=QOS),
        replace(MULTIFACTOR, qos=QOS, priority_weight_fairshare=1000.0),
    ),
    "the fairshare weight is 0": (
        MULTIFACTOR,
        replace(MULTIFACTOR, priority_weight_fairshare=5000.0),
    ),
    "the age weight is 0": (
        replace(MULTIFACTOR, priority_weight_age=0.0),
        MULTIFACTOR,
    ),
    "the size weight is 0": (
        replace(MULTIFACTOR, priority_weight_size=0.0, priority_weight_fairshare=10.0),
        MULTIFACTOR,
    ),
    "no QoS is defined": (MULTIFACTOR, replace(MULTIFACTOR, qos=QOS)),
    "backfill is off": (Policy(backfill="none"), Policy(backfill="easy")),
    "a job whose node fails is not requeued": (
        Policy(on_node_failure="fail"),
        Policy(on_node_failure="requeue"),
    ),
}
"""Per rule: a policy where it applies, and one where it does not."""


@pytest.fixture(scope="module")
def workload() -> Workload:
    """A congested trace with two queues (the QoS rule needs jobs in and out of one)."""
    base = generate_lublin(700, 64, seed=5, load=0.95)
    jobs = base.jobs.copy()
    jobs["queue_id"] = 1 + jobs["job_id"] % 2
    return replace(base, jobs=jobs)


@pytest.fixture(scope="module")
def failures(workload: Workload) -> np.ndarray:
    span = int(workload.jobs["submit_s"][-1] - workload.jobs["submit_s"][0]) + 86_400
    start = int(workload.jobs["submit_s"][0])
    return failure_model(64, 6 * 3600.0, 600.0, span, seed=2, start_s=start)


def schedule(
    workload: Workload, policy: Policy, failures: np.ndarray | None
) -> tuple[list[int], list[int], float]:
    result = simulate(workload, policy, failures=failures, series_every_s=None)
    node_s = float(np.sum(result.node_seconds)) if result.node_seconds is not None else 0.0
    return result.start_s.tolist(), result.end_s.tolist(), node_s


def test_every_rule_names_policy_fields_and_is_held_here() -> None:
    names = set(Policy.__dataclass_fields__)
    for rule in INERT_RULES:
        assert set(rule.fields) <= names and set(rule.given) <= names, rule.because
        assert set(rule.fields) <= set(OTHER_VALUE), rule.because
    assert {rule.because for rule in INERT_RULES} == set(WHERE)


@pytest.mark.parametrize("rule", INERT_RULES, ids=lambda r: r.because)
def test_inert_fields_cannot_change_the_schedule(
    rule: Any, workload: Workload, failures: np.ndarray
) -> None:
    applies, _ = WHERE[rule.because]
    assert rule.applies(applies)
    changed = replace(applies, **{name: OTHER_VALUE[name] for name in rule.fields})
    assert rule.applies(changed)
    assert set(rule.fields) <= set(inert_fields(changed))
    assert effective_policy(changed) == effective_policy(applies)
    assert effective_policy(effective_policy(changed)) == effective_policy(changed)
    assert schedule(workload, changed, failures) == schedule(workload, applies, failures)


@pytest.mark.parametrize("rule", INERT_RULES, ids=lambda r: r.because)
def test_the_same_change_matters_where_the_rule_does_not_apply(
    rule: Any, workload: Workload, failures: np.ndarray
) -> None:
    _, matters = WHERE[rule.because]
    assert not rule.applies(matters)
    changed = replace(matters, **{name: OTHER_VALUE[name] for name in rule.fields})
    assert not rule.applies(changed)
    assert effective_policy(changed) != effective_policy(matters)
    assert schedule(workload, changed, failures) != schedule(workload, matters, failures)


def test_failure_settings_matter_only_when_nodes_fail(
    workload: Workload, failures: np.ndarray
) -> None:
    fail = Policy(on_node_failure="fail", max_retries=0)
    requeue = Policy(on_node_failure="requeue", max_retries=3)
    assert set(NODE_FAILURE_SETTINGS) <= set(inert_fields(fail, node_failures=False))
    assert not set(NODE_FAILURE_SETTINGS) & set(inert_fields(requeue))
    assert effective_policy(fail, node_failures=False) == effective_policy(
        requeue, node_failures=False
    )
    assert schedule(workload, fail, None) == schedule(workload, requeue, None)
    assert schedule(workload, fail, failures) != schedule(workload, requeue, failures)
