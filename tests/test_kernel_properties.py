"""The kernel against the reference scheduler, and the invariants, on random workloads."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.kernel import Kernel
from tests.harness import run_kernel, run_kernel_detailed
from tests.reference import Limits, RefJob, Reservation, simulate, simulate_reserved

MODES = ("none", "easy", "conservative")
ORDERS = ("fcfs", "sjf", "priority")
PLACEMENTS = ("first_fit", "best_fit", "spread", "cons_tres")


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[RefJob], int, int]:
    n_nodes = draw(st.integers(1, 6))
    cores_per_node = draw(st.integers(1, 3))
    total = n_nodes * cores_per_node
    n = draw(st.integers(1, 30))
    jobs = []
    submit = 0
    for k in range(n):
        submit += draw(st.sampled_from([0, 0, 1, 3, 10, 40]))
        wall = draw(st.integers(0, 60))
        run = draw(st.one_of(st.integers(0, wall), st.integers(wall, wall + 30)))
        jobs.append(
            RefJob(
                job_id=draw(st.integers(1, 10**6)) if k % 7 == 3 else k + 1,
                submit=submit,
                cores=draw(st.integers(1, total)),
                walltime=wall,
                run=run,
                priority=float(draw(st.integers(0, 3))),
            )
        )
    ids = [j.job_id for j in jobs]
    if len(set(ids)) != len(ids):  # ids are identities: keep them unique
        for k, job in enumerate(jobs):
            job.job_id = k + 1
    return jobs, n_nodes, cores_per_node


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(workloads(), st.sampled_from(MODES), st.sampled_from(ORDERS), st.sampled_from(PLACEMENTS))
def test_kernel_matches_reference(
    case: tuple[list[RefJob], int, int], mode: str, order: str, placement: str
) -> None:
    """One-core tasks make the machine a pool: placement never changes a start time."""
    jobs, n_nodes, cpn = case
    expected = simulate(jobs, n_nodes * cpn, mode, order)
    assert run_kernel(jobs, n_nodes, cpn, mode, order, placement=placement) == expected


@SETTINGS
@given(workloads(), st.sampled_from(MODES), st.sampled_from(ORDERS))
def test_capacity_submit_and_completion_invariants(
    case: tuple[list[RefJob], int, int], mode: str, order: str
) -> None:
    jobs, n_nodes, cpn = case
    capacity_seen: list[int] = []

    def check(kernel: Kernel, now: int) -> None:
        free = kernel.free_per_node()
        assert (free >= 0).all(), f"a node is over capacity at t={now}"
        assert (free <= kernel.capacity).all()
        capacity_seen.append(int(free[:, 0].sum()))

    start, end = run_kernel(jobs, n_nodes, cpn, mode, order, on_pass=check)
    for job, s, e in zip(jobs, start, end, strict=True):
        assert s >= job.submit, "a job started before it was submitted"
        assert e == s + min(job.run, job.walltime), "every job ends, killed at its walltime"
    # no instant has more cores busy than the machine
    events = sorted({t for se in zip(start, end, strict=True) for t in se})
    for t in events:
        busy = sum(j.cores for j, s, e in zip(jobs, start, end, strict=True) if s <= t < e)
        assert busy <= n_nodes * cpn


@SETTINGS
@given(workloads())
def test_easy_never_delays_the_head_reservation(case: tuple[list[RefJob], int, int]) -> None:
    jobs, n_nodes, cpn = case
    promises: list[tuple[int, int]] = []  # (slot, shadow time) at each pass

    def record(kernel: Kernel, now: int) -> None:
        head, shadow, _ = kernel.shadow()
        if head >= 0 and shadow is not None and kernel.job_states()[head] == 1:
            promises.append((head, shadow))

    kernel_starts: dict[int, int] = {}

    def capture(kernel: Kernel, now: int) -> None:
        record(kernel, now)
        for slot in kernel.started_jobs():
            kernel_starts[int(slot)] = now

    run_kernel(jobs, n_nodes, cpn, "easy", "fcfs", on_pass=capture)
    for slot, shadow in promises:
        assert kernel_starts[slot] <= shadow, "EASY delayed the head job past its reservation"


@SETTINGS
@given(workloads())
def test_conservative_never_delays_any_reservation(case: tuple[list[RefJob], int, int]) -> None:
    """With exact run times nothing is compressed: each job starts at its first reservation.

    (When jobs end early the profile is rebuilt in queue order; a job may then
    move later because an *earlier* job moved up, which conservative allows.
    What it never allows is a later job taking an earlier job's slot, which
    this case would expose as a start after the first reservation.)
    """
    jobs, n_nodes, cpn = case
    for job in jobs:
        job.run = job.walltime
    promised: dict[int, int] = {}
    started_at: dict[int, int] = {}

    def record(kernel: Kernel, now: int) -> None:
        for slot in kernel.started_jobs():
            started_at[int(slot)] = now
        resv = kernel.reservations()
        states = kernel.job_states()
        for slot in np.flatnonzero((resv >= 0) & (states == 1)):
            promised.setdefault(int(slot), int(resv[slot]))

    run = run_kernel_detailed(jobs, n_nodes, cpn, "conservative", "fcfs", on_pass=record)
    job_of = {int(slot): i for i, slot in enumerate(run.slots)}
    for slot, first_promise in promised.items():
        if jobs[job_of[slot]].walltime == 0:
            # a 0 s request holds no time in the profile: a job started before
            # may hold its cores at that instant, so it may start later
            assert started_at[slot] >= first_promise
            continue
        assert started_at[slot] == first_promise, "conservative moved a reservation"


@SETTINGS
@given(
    workloads(),
    st.sampled_from(MODES),
    st.sampled_from(ORDERS),
    st.integers(0, 2),
    st.integers(0, 4),
)
def test_user_limits_match_the_reference(
    case: tuple[list[RefJob], int, int],
    mode: str,
    order: str,
    max_jobs: int,
    max_cores: int,
) -> None:
    """Jobs over their user's cap are passed over the same way in both schedulers."""
    jobs, n_nodes, cpn = case
    for k, job in enumerate(jobs):
        job.user = (k * 7 + int(job.walltime)) % 3
        if max_cores:
            job.cores = min(job.cores, max_cores)  # a job above the cap could never run
    expected = simulate(jobs, n_nodes * cpn, mode, order, Limits(max_jobs, max_cores))
    got = run_kernel(jobs, n_nodes, cpn, mode, order, limits=(max_jobs, max_cores))
    assert got == expected


@st.composite
def reservations(draw: st.DrawFn, n_nodes: int) -> tuple[Reservation, ...]:
    """One or two windows over a few nodes each, for a user (0..2) or a group (0..1);
    two windows on a shared node do not overlap (the kernel refuses that)."""
    out: list[Reservation] = []
    for _ in range(draw(st.integers(1, 2))):
        start = draw(st.integers(0, 150))
        nodes = draw(st.sets(st.integers(0, n_nodes - 1), min_size=1, max_size=n_nodes))
        if out and nodes & out[0].nodes:
            start = out[0].end + draw(st.integers(0, 50))
        kind = draw(st.sampled_from(["user", "user", "group"]))
        out.append(
            Reservation(
                start=start,
                end=start + draw(st.integers(1, 150)),
                nodes=frozenset(nodes),
                owner=draw(st.integers(0, 2 if kind == "user" else 1)),
                owner_kind=kind,
            )
        )
    return tuple(out)


@st.composite
def reserved_workloads(
    draw: st.DrawFn,
) -> tuple[list[RefJob], int, int, tuple[Reservation, ...]]:
    jobs, n_nodes, cpn = draw(workloads())
    for job in jobs:
        job.user = draw(st.integers(-1, 2))
        job.group = draw(st.integers(-1, 1))
    return jobs, n_nodes, cpn, draw(reservations(n_nodes))


@SETTINGS
@given(reserved_workloads(), st.sampled_from(MODES), st.sampled_from(ORDERS))
def test_kernel_matches_reference_with_advance_reservations(
    case: tuple[list[RefJob], int, int, tuple[Reservation, ...]], mode: str, order: str
) -> None:
    """Reserved nodes make placement matter: both place first fit, node by node."""
    jobs, n_nodes, cpn, resv = case
    expected = simulate_reserved(jobs, n_nodes, cpn, mode, list(resv), order)
    got = run_kernel_detailed(jobs, n_nodes, cpn, mode, order, reservations=resv)
    assert (got.start, got.end) == expected, (jobs, n_nodes, cpn, resv)
