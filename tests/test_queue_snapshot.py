"""The whole queue's estimates, reasons and priorities from one snapshot.

``Kernel.snapshot_queue`` answers for every pending job in one walk of the
queue (and on a copy, so the estimates can be computed off the scheduling
loop). Its answers must be, job by job, those of the per-job queries
(``estimate_start``, ``why_pending``, ``priority_factors``): a hand-computed
case, then random queues under every backfill mode, order, limit, partition
and advance reservation.
"""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.kernel import FACTOR_NAMES, JOB_SPEC_DTYPE, JobState, Kernel, Reason, node_capacity
from htcsim.policy import Policy, QoS
from tests.handjobs import KJob, kernel_specs, kernel_with


def per_job(kernel: Kernel, now: int) -> tuple[list[int], list[int], list[int]]:
    """(pending slots in queue order, their estimates, their reasons) one query at a time."""
    slots = kernel.pending_jobs().tolist()
    return (
        slots,
        [kernel.estimate_start(s, now) for s in slots],
        [int(kernel.why_pending(s)) for s in slots],
    )


def test_a_hand_computed_queue() -> None:
    """4 cores, one running job per user, no backfill. A (user 0, 3 cores until
    100) runs. B (user 0, 2 cores, 50 s) is held back by the limit: UserLimit,
    and no reservation for it. C (user 1, 4 cores, 20 s) is first in line:
    Resources, 100 (A's requested end), reserving [100, 120). D (user 2, 1 core,
    200 s) fits the one free core only until 100: 120. E (user 3, 2 cores, 50 s)
    finds 3 cores from 120 (D holds one until 320): 120. B alone would start
    at 100 (nothing ahead of it reserves)."""
    jobs = [
        KJob(tasks=3, wall=100, user=0),
        KJob(tasks=2, wall=50, user=0),
        KJob(tasks=4, wall=20, user=1),
        KJob(tasks=1, wall=200, user=2),
        KJob(tasks=2, wall=50, user=3),
    ]
    policy = Policy(backfill="none", max_running_jobs_per_user=1)
    kernel = kernel_with(node_capacity(1, 4), policy, jobs)
    for slot in range(len(jobs)):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 1
    snap = kernel.snapshot_queue(0)
    assert snap.n_pending == 4 and snap.n_held == 0
    assert snap.slots.tolist() == [1, 2, 3, 4]
    assert snap.job_ids.tolist() == [2, 3, 4, 5]
    assert snap.estimate_starts().tolist() == [100, 100, 120, 120]
    assert [Reason(int(r)).name for r in snap.reasons] == [
        "UserLimit",
        "Resources",
        "Priority",
        "Priority",
    ]
    assert per_job(kernel, 0) == (
        [1, 2, 3, 4],
        [100, 100, 120, 120],
        [int(Reason.UserLimit), int(Reason.Resources), int(Reason.Priority), int(Reason.Priority)],
    )


def test_held_jobs_come_after_the_queue_with_their_reason() -> None:
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob(), KJob(), KJob()])
    kernel.add_dependencies(np.array([3]), np.array([0]))
    for slot in range(4):
        kernel.submit(slot, 0)
    kernel.hold(1)
    assert kernel.schedule(0) == 1
    snap = kernel.snapshot_queue(5)
    assert (snap.n_pending, snap.n_held) == (1, 2)
    assert snap.slots.tolist() == [2, 1, 3]
    assert [Reason(int(r)) for r in snap.reasons] == [
        Reason.Resources,
        Reason.Held,
        Reason.Dependency,
    ]
    assert snap.estimate_starts().tolist() == [100]


def test_the_snapshot_is_a_copy_the_kernel_may_change_under() -> None:
    """Estimates computed after the kernel moved on (jobs started, ended, more
    submitted), while another thread schedules, are those of the moment the
    snapshot was taken."""
    jobs = [KJob(tasks=2, wall=100 + 10 * k) for k in range(40)]
    kernel = kernel_with(node_capacity(2, 2), Policy(backfill="easy"), jobs[:30])
    for slot in range(30):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    before = per_job(kernel, 0)[1]
    snap = kernel.snapshot_queue(0)
    kernel.add_jobs(kernel_specs(jobs[30:], first_id=31))

    def move_on() -> None:
        for slot in range(30, 40):
            kernel.submit(slot, 1)
        kernel.finish(0, 50)
        kernel.schedule(50)

    mover = threading.Thread(target=move_on)
    mover.start()
    during = snap.estimate_starts().tolist()
    mover.join()
    assert during == before
    assert snap.estimate_starts().tolist() == before
    assert per_job(kernel, 50)[1] != before  # the kernel did move on


def test_queries_leave_the_schedule_as_it_was() -> None:
    """Asking for estimates between passes changes no decision (a query builds
    its own profile and keeps the pass's incremental state)."""
    rng = np.random.default_rng(7)
    jobs = [
        KJob(tasks=int(rng.integers(1, 5)), wall=int(rng.integers(5, 80)), submit=k)
        for k in range(60)
    ]

    def run(ask: bool, backfill: str) -> list[int]:
        kernel = kernel_with(node_capacity(2, 2), Policy(backfill=backfill), jobs)  # type: ignore[arg-type]
        running: dict[int, int] = {}
        for now in range(0, 400):
            for slot, end in list(running.items()):
                if end == now:
                    kernel.finish(slot, now)
                    del running[slot]
            if now < len(jobs):
                kernel.submit(now, now)
            kernel.schedule(now)
            for slot in kernel.started_jobs().tolist():
                running[slot] = now + max(1, jobs[slot].wall // 2)
            if ask:
                for slot in kernel.pending_jobs().tolist():
                    kernel.estimate_start(slot, now)
                kernel.snapshot_queue(now).estimate_starts()
        return kernel.start_times().tolist()

    for backfill in ("none", "easy", "conservative"):
        assert run(True, backfill) == run(False, backfill)


# ---------------------------------------------------------------------- random queues


@st.composite
def queues(draw: st.DrawFn) -> tuple[Kernel, int]:
    """A kernel left mid-run: jobs submitted over time, passes, some ends, holds,
    limits, partitions and advance reservations; and the time of the queries."""
    n_nodes = draw(st.integers(1, 4))
    capacity = np.zeros((n_nodes, 4), dtype=np.int64)
    for n in range(n_nodes):
        capacity[n] = (draw(st.integers(1, 4)), draw(st.sampled_from([0, 4096])), 0, 0)
        capacity[n, 2] = draw(st.integers(0, 1))
    parts = draw(st.integers(1, min(2, n_nodes)))
    node_part = np.array([n % parts for n in range(n_nodes)], dtype=np.int32)
    policy = Policy(
        backfill=draw(st.sampled_from(["none", "easy", "conservative"])),
        order=draw(st.sampled_from(["fcfs", "sjf", "priority", "multifactor"])),
        backfill_depth=draw(st.sampled_from([0, 0, 1, 3])),
        max_running_jobs_per_user=draw(st.sampled_from([0, 0, 1, 2])),
        max_queued_jobs_per_user=draw(st.sampled_from([0, 0, 2])),
        max_running_jobs_per_group=draw(st.sampled_from([0, 0, 2])),
        priority_weight_age=draw(st.sampled_from([0.0, 100.0])),
        priority_weight_size=draw(st.sampled_from([0.0, 50.0])),
        qos=(QoS("short", running_jobs=draw(st.sampled_from([0, 1]))),),
    )  # type: ignore[arg-type]
    kernel = Kernel(capacity, policy)
    if parts > 1:
        kernel.set_partitions(node_part)
    n = draw(st.integers(1, 25))
    specs = np.zeros(n, dtype=JOB_SPEC_DTYPE)
    durations = []
    for k in range(n):
        part = draw(st.integers(0, parts - 1))
        nodes = capacity[node_part == part]
        cores = int(nodes[:, 0].max())
        specs[k]["job_id"] = k + 1
        specs[k]["walltime_s"] = draw(st.integers(1, 80))
        specs[k]["n_tasks"] = draw(st.integers(1, int(nodes[:, 0].sum())))
        specs[k]["per_task"][0] = 1 if specs[k]["n_tasks"] > 1 else draw(st.integers(1, cores))
        if nodes[:, 1].min() > 0:
            specs[k]["per_task"][1] = draw(st.sampled_from([0, 1024]))
        if nodes[:, 2].sum() >= specs[k]["n_tasks"]:
            specs[k]["per_task"][2] = draw(st.integers(0, 1))
        specs[k]["user_idx"] = draw(st.integers(-1, 2))
        specs[k]["group_idx"] = draw(st.integers(-1, 1))
        specs[k]["qos_idx"] = draw(st.integers(-1, 0))
        specs[k]["part_idx"] = part
        specs[k]["priority"] = float(draw(st.integers(0, 3)))
        durations.append(draw(st.integers(0, int(specs[k]["walltime_s"]) + 10)))
    kernel.add_jobs(specs)
    if n > 2 and draw(st.booleans()):
        kernel.add_dependencies(
            np.array([n - 1]), np.array([0]), "afterany", draw(st.integers(0, 30))
        )
    if draw(st.booleans()):
        start = draw(st.integers(0, 60))
        kernel.add_reservation(
            start,
            start + draw(st.integers(1, 80)),
            np.array([draw(st.integers(0, n_nodes - 1))]),
            draw(st.sampled_from(["user", "group", "qos"])),
            draw(st.integers(0, 1)),
        )
    submits = sorted(draw(st.integers(0, 60)) for _ in range(n))
    ends: dict[int, int] = {}
    now = 0
    for t in sorted(set(submits) | {draw(st.integers(0, 120)) for _ in range(6)}):
        now = t
        for slot, end in sorted(ends.items()):
            if end <= now and kernel.state_of(slot) == JobState.RUNNING:
                kernel.finish(slot, end)
                del ends[slot]
        for slot, s in enumerate(submits):
            if s == now:
                kernel.submit(slot, now)
                if kernel.state_of(slot) == JobState.PENDING and draw(st.integers(0, 9)) == 0:
                    kernel.hold(slot)
        kernel.schedule(now)
        for slot in kernel.started_jobs().tolist():
            ends[slot] = now + durations[slot]
    return kernel, now + draw(st.sampled_from([0, 0, 1, 25]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queues())
def test_the_snapshot_answers_as_the_per_job_queries(case: tuple[Kernel, int]) -> None:
    kernel, now = case
    snap = kernel.snapshot_queue(now)
    slots = snap.slots.tolist()
    states = kernel.job_states()
    assert slots[: snap.n_pending] == kernel.pending_jobs().tolist()
    assert slots[snap.n_pending :] == np.flatnonzero(states == int(JobState.HELD)).tolist()
    estimates = snap.estimate_starts().tolist()
    for k, slot in enumerate(slots):
        assert snap.reasons[k] == int(kernel.why_pending(slot)), f"reason of slot {slot}"
        priority, factors = kernel.priority_factors(slot, now)
        assert snap.priorities[k] == priority
        assert dict(zip(FACTOR_NAMES, snap.factors[k].tolist(), strict=True)) == factors
        if k < snap.n_pending:
            assert estimates[k] == kernel.estimate_start(slot, now), f"estimate of slot {slot}"
    # asking twice, or per job first, gives the same answers
    assert kernel.snapshot_queue(now).estimate_starts().tolist() == estimates
