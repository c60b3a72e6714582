"""Why a job is not running: one tiny cluster per reason code, each driven by hand.

Each scenario builds the smallest state in which exactly one reason applies to
one job, so a reason computed from the wrong rule (or in the wrong order of
rules) shows up as a different code, not as a silent pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from htcsim.kernel import JobState, Kernel, NodeState, Reason, node_capacity
from htcsim.policy import Policy, QoS
from tests.handjobs import KJob, kernel_with

Scenario = Callable[[], tuple[Kernel, int]]


def submit_all(kernel: Kernel, now: int) -> None:
    for slot in range(kernel.n_jobs):
        kernel.submit(slot, now)


def priority() -> tuple[Kernel, int]:
    """4 cores. A holds all of them until 100; B (4 cores) is first in line; C
    (1 core, 10 s) is behind B and no core is free: Priority, not Resources."""
    kernel = kernel_with(
        node_capacity(1, 4), Policy(), [KJob(tasks=4), KJob(tasks=4), KJob(tasks=1, wall=10)]
    )
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    return kernel, 2


def resources() -> tuple[Kernel, int]:
    """The same state: B is the first job in line and waits for cores."""
    kernel, _ = priority()
    return kernel, 1


def dependency() -> tuple[Kernel, int]:
    """2 cores. B depends on A (afterany), which runs: B is held although a core is free."""
    kernel = kernel_with(node_capacity(1, 2), Policy(), [KJob(), KJob()])
    kernel.add_dependencies(np.array([1]), np.array([0]), "afterany", 30)
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    assert kernel.state_of(1) == JobState.HELD
    return kernel, 1


def begin_time() -> tuple[Kernel, int]:
    """A ends at 50; B's think time of 30 s keeps it held until 80."""
    kernel, child = dependency()
    kernel.finish(0, 50)
    assert kernel.schedule(50) == 0
    assert kernel.next_wakeup() == 80
    return kernel, child


def qos_limit() -> tuple[Kernel, int]:
    """4 cores, a QoS that runs one job at a time: its second job waits with 3 cores free."""
    policy = Policy(qos=(QoS("short", running_jobs=1),))
    kernel = kernel_with(node_capacity(1, 4), policy, [KJob(qos=0), KJob(qos=0)])
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    return kernel, 1


def user_limit() -> tuple[Kernel, int]:
    """One running job per user: the user's second job waits with 3 cores free."""
    policy = Policy(max_running_jobs_per_user=1)
    kernel = kernel_with(node_capacity(1, 4), policy, [KJob(user=0), KJob(user=0)])
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    return kernel, 1


def group_limit() -> tuple[Kernel, int]:
    """One running job per group: two users of one group, the second waits.

    Each user is under the per-user cap (none set), so only the group's applies.
    """
    policy = Policy(max_running_jobs_per_group=1)
    jobs = [KJob(user=0, group=0), KJob(user=1, group=0)]
    kernel = kernel_with(node_capacity(1, 4), policy, jobs)
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    return kernel, 1


def reservation() -> tuple[Kernel, int]:
    """2 free cores on a node reserved for user 0 over [100, 200); user 1's job
    of 150 s would overlap the window: it fits the free cores but for the reservation."""
    kernel = kernel_with(node_capacity(1, 2), Policy(), [KJob(tasks=2, wall=150, user=1)])
    kernel.add_reservation(100, 200, np.array([0]), "user", 0)
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 0
    return kernel, 0


def node_down() -> tuple[Kernel, int]:
    """2 nodes of 2 cores, one down: a 4-core job cannot fit on what is up."""
    kernel = kernel_with(node_capacity(2, 2), Policy(), [KJob(tasks=4)])
    kernel.set_node_state(1, NodeState.DOWN)
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 0
    return kernel, 0


def held() -> tuple[Kernel, int]:
    """A pending job put on hold before the pass does not start on an idle node."""
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob()])
    submit_all(kernel, 0)
    kernel.hold(0)
    assert kernel.schedule(0) == 0
    return kernel, 0


def not_pending() -> tuple[Kernel, int]:
    """A running job is not pending."""
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob()])
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    return kernel, 0


def backfill_depth() -> tuple[Kernel, int]:
    """Backfill depth 1: B (the head) is examined, C (2nd in line) is beyond the depth."""
    kernel = kernel_with(
        node_capacity(1, 4),
        Policy(backfill_depth=1),
        [KJob(tasks=4), KJob(tasks=4), KJob(tasks=1, wall=10)],
    )
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    return kernel, 2


SCENARIOS: dict[Reason, Scenario] = {
    Reason.Priority: priority,
    Reason.Resources: resources,
    Reason.Dependency: dependency,
    Reason.BeginTime: begin_time,
    Reason.QOSLimit: qos_limit,
    Reason.UserLimit: user_limit,
    Reason.GroupLimit: group_limit,
    Reason.Reservation: reservation,
    Reason.NodeDown: node_down,
    Reason.Held: held,
    Reason.NotPending: not_pending,
    Reason.BackfillDepth: backfill_depth,
}


def test_every_reason_but_none_has_a_scenario() -> None:
    """A reason code added to the kernel without a scenario here fails this test."""
    assert set(SCENARIOS) == {reason for reason in Reason if reason != Reason["None"]}


@pytest.mark.parametrize("reason", list(SCENARIOS), ids=lambda reason: reason.name)
def test_the_job_waits_for_exactly_this_reason(reason: Reason) -> None:
    kernel, slot = SCENARIOS[reason]()
    assert kernel.why_pending(slot) == reason


@pytest.mark.parametrize("reason", list(SCENARIOS), ids=lambda reason: reason.name)
def test_no_pending_or_held_job_is_given_reason_none(reason: Reason) -> None:
    """None would tell a user nothing: every job that waits has a reason."""
    kernel, _ = SCENARIOS[reason]()
    states = kernel.job_states()
    waiting = [s for s in range(kernel.n_jobs) if states[s] in (JobState.PENDING, JobState.HELD)]
    for slot in waiting:
        assert kernel.why_pending(slot) != Reason["None"], slot


def test_a_job_submitted_before_any_pass_has_a_reason() -> None:
    """Between a submit and the next pass the job is pending and first in line."""
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob()])
    kernel.submit(0, 0)
    assert kernel.why_pending(0) == Reason.Resources


def test_new_ended_and_cancelled_jobs_are_not_pending() -> None:
    kernel = kernel_with(node_capacity(1, 2), Policy(), [KJob(), KJob(), KJob()])
    assert kernel.why_pending(0) == Reason.NotPending  # not submitted yet
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    assert kernel.schedule(0) == 2
    kernel.finish(0, 10)
    kernel.cancel(1, 10)
    assert kernel.why_pending(0) == Reason.NotPending
    assert kernel.why_pending(1) == Reason.NotPending
    assert kernel.state_of(1) == JobState.CANCELLED


@pytest.mark.parametrize(
    ("depth", "backfill", "reason"),
    [
        (1, "easy", Reason.BackfillDepth),
        (2, "easy", Reason.Priority),  # 2nd in line is within a depth of 2
        (0, "easy", Reason.Priority),  # 0: no depth limit
        (1, "none", Reason.Priority),  # without backfill the depth bounds nothing
    ],
)
def test_backfill_depth_is_the_queue_position_against_the_limit(
    depth: int, backfill: str, reason: Reason
) -> None:
    kernel = kernel_with(
        node_capacity(1, 4),
        Policy(backfill=backfill, backfill_depth=depth),  # type: ignore[arg-type]
        [KJob(tasks=4), KJob(tasks=4), KJob(tasks=1, wall=10)],
    )
    submit_all(kernel, 0)
    kernel.schedule(0)
    assert kernel.why_pending(1) == Reason.Resources
    assert kernel.why_pending(2) == reason


def test_a_limit_outranks_the_place_in_line() -> None:
    """A job held back by a cap is named for the cap even behind a waiting head:
    the head does not become the job's reason."""
    policy = Policy(max_running_jobs_per_user=1)
    jobs = [KJob(tasks=3, user=0), KJob(tasks=4, user=1), KJob(user=0)]
    kernel = kernel_with(node_capacity(1, 4), policy, jobs)
    submit_all(kernel, 0)
    assert kernel.schedule(0) == 1
    assert kernel.why_pending(1) == Reason.Resources
    assert kernel.why_pending(2) == Reason.UserLimit


def test_a_reservation_is_not_the_reason_once_its_window_is_over() -> None:
    """After the window the reserved node is free for all: the job starts."""
    kernel, slot = reservation()
    assert kernel.schedule(200) == 1
    assert kernel.why_pending(slot) == Reason.NotPending
    assert kernel.start_times()[slot] == 200
