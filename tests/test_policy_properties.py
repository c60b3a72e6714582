"""The kernel against the reference on dependencies and per-user/group limits.

Random small workloads (a pool of one-core tasks, so placement never matters)
run through both schedulers; every start, end and dependency cancellation
must agree exactly, for each backfill mode and queue order.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import run_kernel_detailed
from tests.reference import DEP_KINDS, Limits, RefJob, simulate, simulate_detailed

MODES = ("none", "easy", "conservative")
ORDERS = ("fcfs", "sjf", "priority")

Case = tuple[list[RefJob], int, int]


@st.composite
def workloads(
    draw: st.DrawFn, max_jobs: int = 24, deps: bool = False, owners: bool = False
) -> Case:
    """Small clusters, bursts of jobs, optional dependency DAGs and users/groups.

    A dependency names an earlier job of the list (so the graph is acyclic);
    with dependencies the submit times are sometimes shuffled, so that a child
    may arrive before its parent. Job ids are unique (they are identities) but
    not in submit order.
    """
    n_nodes = draw(st.integers(1, 4))
    cores_per_node = draw(st.integers(1, 3))
    total = n_nodes * cores_per_node
    n = draw(st.integers(1, max_jobs))
    ids = draw(st.permutations(range(1, n + 1)))
    jobs = []
    submit = 0
    for k in range(n):
        submit += draw(st.sampled_from([0, 0, 1, 3, 10, 40]))
        wall = draw(st.integers(1, 40))
        run = draw(st.one_of(st.integers(0, wall), st.integers(wall, wall + 20)))
        job = RefJob(
            job_id=ids[k],
            submit=submit,
            cores=draw(st.integers(1, total)),
            walltime=wall,
            run=run,
            priority=float(draw(st.integers(0, 3))),
        )
        if deps:
            job.ok = draw(st.sampled_from([True, True, True, False]))
            if k > 0:
                for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
                    parent = draw(st.integers(0, k - 1))
                    kind = draw(st.sampled_from(DEP_KINDS))
                    job.deps.append((parent, kind, draw(st.sampled_from([0, 0, 1, 7, 30]))))
        if owners:
            job.user = draw(st.integers(-1, 2))
            job.group = draw(st.integers(-1, 1))
        jobs.append(job)
    if deps and draw(st.booleans()):
        # children may arrive before their parents (held from their submit on)
        for job, submit in zip(jobs, draw(st.permutations([j.submit for j in jobs])), strict=True):
            job.submit = submit
    return jobs, n_nodes, cores_per_node


@st.composite
def limit_sets(draw: st.DrawFn) -> Limits:
    """Caps small enough to bind on these clusters (a job above a cores cap never runs)."""
    return Limits(
        jobs=draw(st.integers(0, 2)),
        cores=draw(st.integers(0, 4)),
        queued=draw(st.integers(0, 3)),
        group_jobs=draw(st.integers(0, 3)),
        group_cores=draw(st.integers(0, 6)),
        group_queued=draw(st.integers(0, 4)),
    )


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(case: Case, mode: str, order: str, limits: Limits | None = None) -> None:
    """Starts, ends (a cancellation's time included) and cancellations, job by job."""
    jobs, n_nodes, cpn = case
    expected = simulate_detailed(jobs, n_nodes * cpn, mode, order, limits)
    got = run_kernel_detailed(jobs, n_nodes, cpn, mode, order, limits=limits or (0, 0))
    assert got.start == expected.start
    assert got.end == expected.end
    assert got.cancelled == expected.cancelled


@SETTINGS
@given(workloads(deps=True), st.sampled_from(MODES), st.sampled_from(ORDERS))
def test_dependencies_match_the_reference(case: Case, mode: str, order: str) -> None:
    """Holds, think times (a pass at the end of each), cancellations that spread, and
    children queued by their submit time whatever their eligibility time."""
    assert_same(case, mode, order)


@SETTINGS
@given(workloads(owners=True), st.sampled_from(MODES), st.sampled_from(ORDERS), limit_sets())
def test_user_and_group_limits_match_the_reference(
    case: Case, mode: str, order: str, limits: Limits
) -> None:
    """Running-jobs, cores and queued-jobs caps per user and per group: a job held back
    is passed over (never the head, never reserved) in both schedulers."""
    assert_same(case, mode, order, limits)


@SETTINGS
@given(
    workloads(deps=True, owners=True),
    st.sampled_from(MODES),
    st.sampled_from(ORDERS),
    limit_sets(),
)
def test_dependencies_and_limits_together_match_the_reference(
    case: Case, mode: str, order: str, limits: Limits
) -> None:
    """A child released by its parent is counted against its user's and group's caps
    from the pass it becomes eligible at."""
    assert_same(case, mode, order, limits)


def test_the_worked_dependency_example() -> None:
    """The example of tests/reference.py's docstring, in both schedulers."""
    for a_ok, expected in (
        (True, ([0, 20, 10], [10, 30, 20], [False, False, False])),
        (False, ([0, -1, 10], [10, 10, 20], [False, True, False])),
    ):
        jobs = [
            RefJob(1, 0, 2, 10, 10, ok=a_ok),
            RefJob(2, 0, 1, 10, 10, deps=[(0, "afterok", 5)]),
            RefJob(3, 1, 2, 10, 10),
        ]
        ref = simulate_detailed(jobs, 2, "none")
        assert (ref.start, ref.end, ref.cancelled) == expected
        run = run_kernel_detailed(jobs, 2, 1, "none")
        assert (run.start, run.end, run.cancelled) == expected


@pytest.mark.parametrize("mode", MODES)
def test_queued_and_group_caps_by_hand(mode: str) -> None:
    """4 cores, five 1-core 10 s jobs at t=0; 1 queued job per user, 2 running per group.

    Queue J1..J5 as (user, group): (0,0) (0,0) (1,0) (1,1) (2,1). At 0: J1 starts;
    J2 starts (J1, started, no longer counts as its user's pending job; group 0 now
    runs 2); J3 is over group 0's cap; J4 is user 1's 2nd pending job (behind J3),
    though a core is free; J5 starts. At 10, J3 then J4 start.
    """
    owners = [(0, 0), (0, 0), (1, 0), (1, 1), (2, 1)]
    jobs = [RefJob(k + 1, 0, 1, 10, 10, user=u, group=g) for k, (u, g) in enumerate(owners)]
    limits = Limits(queued=1, group_jobs=2)
    assert simulate(jobs, 4, mode, limits=limits)[0] == [0, 0, 10, 10, 0]
    assert run_kernel_detailed(jobs, 4, 1, mode, limits=limits).start == [0, 0, 10, 10, 0]


# 3 cores. X (2 cores, user 1) runs 0-100. B (3 cores, 50 s, user 0) waits from 1: it is
# its user's only pending job, first in line, reserved at 100. C (1 core, 200 s, user 2)
# at 2 would hold a core until 202: it must not start before B.
QUEUED_CAP_CASE = [
    RefJob(1, 0, 2, 100, 100, user=1, group=1),
    RefJob(2, 1, 3, 50, 50, user=0, group=0),
    RefJob(3, 2, 1, 200, 200, user=2, group=2),
]


@pytest.mark.parametrize(
    "limits", [Limits(queued=1), Limits(group_queued=1)], ids=["user", "group"]
)
@pytest.mark.parametrize("mode", ["easy", "conservative"])
def test_conservative_counts_the_first_waiting_job_once_against_queued_caps(
    mode: str, limits: Limits
) -> None:
    assert simulate(QUEUED_CAP_CASE, 3, mode, limits=limits)[0] == [0, 100, 150]
    assert run_kernel_detailed(QUEUED_CAP_CASE, 3, 1, mode, limits=limits).start == [0, 100, 150]
