"""Policy features of the kernel, each against values worked out by hand in the comments.

Multifactor priority, fairshare (classic and fair tree), dependencies, holds,
advance reservations, the starvation guard and the caps on users, groups and
QoS. Every scenario is small enough that the expected numbers can be checked
with pencil and paper, so a test fails on a wrong formula, not only on a crash.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from htcsim.kernel import (
    JobState,
    Kernel,
    KernelInputError,
    NodeState,
    Reason,
    node_capacity,
)
from htcsim.policy import Policy, QoS
from tests.handjobs import KJob, kernel_specs, kernel_with, replay_jobs


def names(*ids: int) -> np.ndarray:
    """Dense account names for ``Kernel.set_accounts``: dense k is named str(ids[k])."""
    return np.array(ids, dtype=np.int64)


# ----------------------------------------------------------------- multifactor
#
# 8 cores (2 nodes x 4). X (user 0, 8 cores, 1000 s) takes the machine at 0.
# Then B (user 0, 2 cores, QoS high) at 5, C (user 1, 6 cores, QoS low) at 10,
# D (user 0, 1 core, no QoS) at 20. Weights: age 1000 (max age 1000 s), size 800,
# QoS 500 (high 40, low 10: normalized 1 and 0.25); user 1 has nice 50.
#
# Fairshare (weight 0 here, but the factor is shown): at the recomputation at 100
# only X has run, 8 x 100 core-seconds for user 0. Both users have no group: one
# implicit group, S = 1 x 1/2 each. U0 = 1, U_eff0 = 1 + (1 - 1) x 1/2 = 1 ->
# 2^(-1/0.5) = 0.25; U1 = 0, U_eff1 = 0 + (1 - 0) x 1/2 = 0.5 -> 2^(-1) = 0.5.
#
# At 100 (ages 95, 90, 80 s):
#   favor small (size = 1 - cores/8):
#     B = 95 + 800 x 0.75 + 500 x 1 = 1195
#     C = 90 + 800 x 0.25 + 500 x 0.25 - 50 = 365
#     D = 80 + 800 x 0.875 = 780          -> queue B, D, C
#   favor large (size = cores/8):
#     B = 95 + 200 + 500 = 795; C = 90 + 600 + 125 - 50 = 765; D = 80 + 100 = 180
# At 1000 X ends (ages 995, 990, 980):
#   small: B 2095, C 1265, D 1680 -> B and D start (3 cores), C (6) waits for them
#   large: B 1695, C 1665, D 1080 -> B and C start (8 cores), D waits
MF_JOBS = [
    KJob(tasks=8, wall=1000, user=0),
    KJob(tasks=2, submit=5, user=0, qos=1),
    KJob(tasks=6, submit=10, user=1, qos=0),
    KJob(tasks=1, submit=20, user=0),
]


def mf_policy(favor: str = "small") -> Policy:
    return Policy(
        order="multifactor",
        priority_weight_age=1000.0,
        priority_max_age_s=1000,
        priority_weight_size=800.0,
        priority_weight_qos=500.0,
        priority_favor=favor,  # type: ignore[arg-type]
        priority_interval_s=100,
        qos=(QoS("low", priority=10.0), QoS("high", priority=40.0)),
        nice=(("1", 50.0),),
    )


def mf_kernel(favor: str = "small") -> Kernel:
    """The scenario above up to the pass at 20 (X running, B, C, D pending)."""
    kernel = kernel_with(node_capacity(2, 4), mf_policy(favor), MF_JOBS)
    kernel.set_accounts(names(0, 1), names())
    for slot, job in enumerate(MF_JOBS):
        kernel.submit(slot, job.submit)
        kernel.schedule(job.submit)
    assert kernel.start_times().tolist() == [0, -1, -1, -1]
    return kernel


@pytest.mark.parametrize(
    ("favor", "at_100", "size", "queue", "at_1000", "started"),
    [
        ("small", [1195, 365, 780], [0.75, 0.25, 0.875], [1, 3, 2], [2095, 1265, 1680], [1, 3]),
        ("large", [795, 765, 180], [0.25, 0.75, 0.125], [1, 2, 3], [1695, 1665, 1080], [1, 2]),
    ],
)
def test_multifactor_priorities_and_start_order_by_hand(
    favor: str,
    at_100: list[float],
    size: list[float],
    queue: list[int],
    at_1000: list[float],
    started: list[int],
) -> None:
    kernel = mf_kernel(favor)
    kernel.schedule(100)
    expected_factors = {
        1: {"age": 0.095, "size": size[0], "fairshare": 0.25, "qos": 1.0, "nice": 0.0},
        2: {"age": 0.09, "size": size[1], "fairshare": 0.5, "qos": 0.25, "nice": 50.0},
        3: {"age": 0.08, "size": size[2], "fairshare": 0.25, "qos": 0.0, "nice": 0.0},
    }
    for slot, factors in expected_factors.items():
        priority, got = kernel.priority_factors(slot, 100)
        assert priority == pytest.approx(at_100[slot - 1])
        assert got == pytest.approx(factors)
    assert kernel.priorities()[1:] == pytest.approx(at_100)
    assert kernel.pending_jobs().tolist() == queue
    kernel.finish(0, 1000)
    assert kernel.schedule(1000) == 2
    assert kernel.priorities()[1:] == pytest.approx(at_1000)
    assert kernel.started_jobs().tolist() == started  # in queue order
    assert kernel.start_times()[started].tolist() == [1000, 1000]


def test_age_is_capped_at_max_age() -> None:
    """At 5000 every job is older than max_age (1000 s): the age factor is 1, not 4.995."""
    kernel = mf_kernel()
    kernel.schedule(5000)
    assert kernel.priority_factors(1, 5000)[1]["age"] == 1.0
    # B = 1000 + 600 + 500, C = 1000 + 200 + 125 - 50, D = 1000 + 700
    assert kernel.priorities()[1:] == pytest.approx([2100, 1275, 1700])


def test_priorities_are_recomputed_only_at_the_interval() -> None:
    """A job's stored priority is fixed between recomputations (a job submitted
    in between gets its age-0 value), and the next recomputation is one
    interval after the last one, at the first pass at or after it."""
    kernel = kernel_with(node_capacity(2, 4), mf_policy(), MF_JOBS)
    kernel.set_accounts(names(0, 1), names())
    kernel.submit(0, 0)
    kernel.schedule(0)  # recomputation at 0 (X only); the next is due at 100
    kernel.submit(1, 5)
    kernel.schedule(5)
    # B at submit: age 0 -> 0 + 600 + 500
    assert kernel.priorities()[1] == pytest.approx(1100)
    kernel.submit(2, 10)
    kernel.schedule(10)
    kernel.submit(3, 20)
    kernel.schedule(20)
    # C: 0 + 200 + 125 - 50; D: 0 + 700
    assert kernel.priorities()[1:] == pytest.approx([1100, 275, 700])
    kernel.schedule(99)
    assert kernel.priorities()[1:] == pytest.approx([1100, 275, 700])
    kernel.schedule(130)  # first pass at or after 100: recomputed at 130, next due 230
    assert kernel.priorities()[1:] == pytest.approx([1225, 395, 810])
    kernel.schedule(200)
    assert kernel.priorities()[1:] == pytest.approx([1225, 395, 810])
    kernel.schedule(230)
    assert kernel.priorities()[1:] == pytest.approx([1325, 495, 910])
    # the live factors move with time, the stored key does not
    assert kernel.priority_factors(1, 231)[0] == pytest.approx(1326)


# -------------------------------------------------------------------- fairshare
#
# 2 nodes of 8 cores, node 1 down. A sentinel job (no user, 16 cores) stays
# pending for ever (reason NodeDown), so that every pass has a queue to order
# and recomputes when due. Users run jobs at 0 and end at 100.


def fairshare_kernel(
    policy: Policy, jobs: list[KJob], users: np.ndarray, groups: np.ndarray, ends: list[int]
) -> Kernel:
    """``jobs`` start at 0 and end at ``ends``; the sentinel waits; passes at 0 and 100."""
    kernel = kernel_with(node_capacity(2, 8), policy, [*jobs, KJob(tasks=16)])
    kernel.set_node_state(1, NodeState.DOWN)
    kernel.set_accounts(users, groups)
    for slot in range(kernel.n_jobs):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == len(jobs)
    assert kernel.why_pending(len(jobs)) == Reason.NodeDown
    for slot, end in enumerate(ends):
        kernel.finish(slot, end)
    kernel.schedule(100)
    return kernel


def fs_policy(**changes: object) -> Policy:
    values: dict[str, object] = {
        "order": "multifactor",
        "priority_weight_age": 0.0,
        "priority_weight_fairshare": 1000.0,
        "fairshare_half_life_s": 100,
        "priority_interval_s": 100,
    }
    values.update(changes)
    return Policy(**values)  # type: ignore[arg-type]


# User 0 (group 0) runs 3 cores and user 1 (group 1) 1 core, 0..100: usage 300
# and 100 core-seconds. U0 = 0.75, U1 = 0.25; each alone in its group, so
# U_eff = U. Equal group shares: S = 0.5 each.
#   factor0 = 2^(-0.75/0.5) = 2^-1.5, factor1 = 2^(-0.25/0.5) = 2^-0.5
TWO_USERS = [KJob(tasks=3, user=0, group=0), KJob(tasks=1, user=1, group=1)]


def test_classic_fairshare_usage_decays_with_the_half_life() -> None:
    kernel = fairshare_kernel(fs_policy(), TWO_USERS, names(0, 1), names(0, 1), [100, 100])
    usage, factor = kernel.fairshare_usage()
    assert usage.tolist() == [300.0, 100.0]  # ended at 100, recomputed at 100: no decay yet
    assert factor == pytest.approx([2**-1.5, 2**-0.5])
    kernel.schedule(150)  # no recomputation before 200: values as of 100
    assert kernel.fairshare_usage()[0].tolist() == [300.0, 100.0]
    kernel.schedule(200)  # 100 s later = one half-life: halved
    usage, factor = kernel.fairshare_usage()
    assert usage == pytest.approx([150.0, 50.0])
    assert factor == pytest.approx([2**-1.5, 2**-0.5])  # the shares of usage did not change
    kernel.schedule(400)  # two more half-lives
    assert kernel.fairshare_usage()[0] == pytest.approx([37.5, 12.5])


def test_usage_of_a_running_job_is_added_at_each_recomputation() -> None:
    """The usage halves what was there, then adds the core-seconds run since the
    last recomputation: a 2-core job running 0..250, recomputations at 100, 200, 300:
    100: 200; 200: 200/2 + 200 = 300; 300: 300/2 + 2 x 50 (it ended at 250) = 250."""
    kernel = kernel_with(
        node_capacity(2, 8), fs_policy(), [KJob(tasks=2, wall=1000, user=0), KJob(tasks=16)]
    )
    kernel.set_node_state(1, NodeState.DOWN)
    kernel.set_accounts(names(0), names())
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    kernel.schedule(0)
    seen = []
    for now in (100, 200, 250, 300):
        if now == 250:
            kernel.finish(0, 250)
        kernel.schedule(now)
        seen.append(float(kernel.fairshare_usage()[0][0]))
    assert seen == pytest.approx([200.0, 300.0, 300.0, 250.0])


def test_group_shares_scale_the_classic_factor() -> None:
    """Group 0 has 3 shares, group 1 one: S0 = 0.75, S1 = 0.25. Usage in proportion
    to the shares (0.75, 0.25) gives both 2^-1 = 0.5."""
    policy = fs_policy(group_shares={"0": 3.0})
    kernel = fairshare_kernel(policy, TWO_USERS, names(0, 1), names(0, 1), [100, 100])
    assert kernel.fairshare_usage()[1] == pytest.approx([0.5, 0.5])


def test_user_shares_and_the_group_usage_in_the_classic_factor() -> None:
    """Both users in group 0, user 0 with 3 shares: S0 = 3/4, S1 = 1/4. Group usage
    is 1, so U_eff0 = 0.75 + (1 - 0.75) x 3/4 = 0.9375 and U_eff1 = 0.25 + 0.75 x 1/4
    = 0.4375: factors 2^(-0.9375/0.75) = 2^-1.25 and 2^(-0.4375/0.25) = 2^-1.75."""
    jobs = [KJob(tasks=3, user=0, group=0), KJob(tasks=1, user=1, group=0)]
    policy = fs_policy(user_shares={"0": 3.0})
    kernel = fairshare_kernel(policy, jobs, names(0, 1), names(0), [100, 100])
    assert kernel.fairshare_usage()[1] == pytest.approx([2**-1.25, 2**-1.75])


def test_no_usage_yet_means_a_factor_of_one() -> None:
    """Before anything has run, total usage is 0: every factor is 1 (not 2^-inf or NaN)."""
    kernel = kernel_with(node_capacity(1, 8), fs_policy(), TWO_USERS)
    kernel.set_accounts(names(0, 1), names(0, 1))
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    kernel.schedule(0)
    usage, factor = kernel.fairshare_usage()
    assert usage.tolist() == [0.0, 0.0]
    assert factor.tolist() == [1.0, 1.0]


def test_the_fairshare_factor_orders_new_jobs() -> None:
    """After the usage above, user 1 (factor 2^-0.5) goes before user 0 (2^-1.5):
    both submit an 8-core job at 110 (user 0's first); user 1's starts, user 0's waits."""
    kernel = fairshare_kernel(fs_policy(), TWO_USERS, names(0, 1), names(0, 1), [100, 100])
    first = kernel.add_jobs(
        kernel_specs(
            [KJob(tasks=8, submit=110, user=0, group=0), KJob(tasks=8, submit=110, user=1, group=1)]
        )
    )
    kernel.submit(first, 110)
    kernel.submit(first + 1, 110)
    assert kernel.priorities()[first : first + 2] == pytest.approx([1000 * 2**-1.5, 1000 * 2**-0.5])
    assert kernel.schedule(110) == 1
    assert kernel.started_jobs().tolist() == [first + 1]
    assert kernel.why_pending(first) == Reason.Resources


# Fair tree, half-life 0 (no decay), N users in the implicit group, equal shares:
# users are ranked by S/U (no usage ranks first); the first gets N/N, ties share.


def test_fair_tree_ranks_users_by_level_fairshare() -> None:
    """Usage 300, 200, 0 core-seconds: user 2 (none) 3/3, user 1 2/3, user 0 1/3."""
    jobs = [KJob(tasks=3, user=0), KJob(tasks=2, user=1)]
    policy = fs_policy(fairshare_algorithm="fair_tree", fairshare_half_life_s=0)
    kernel = fairshare_kernel(policy, jobs, names(0, 1, 2), names(), [100, 100])
    usage, factor = kernel.fairshare_usage()
    assert usage.tolist() == [300.0, 200.0, 0.0]
    assert factor == pytest.approx([1 / 3, 2 / 3, 1.0])
    kernel.schedule(500)  # half-life 0: no decay
    assert kernel.fairshare_usage()[0].tolist() == [300.0, 200.0, 0.0]


def test_fair_tree_ties_share_a_rank() -> None:
    """Usage 300, 100, 100, 0: user 3 4/4; users 1 and 2 tie at 3/4; user 0 is
    fourth and gets 1/4 (the tie used up rank 2)."""
    jobs = [KJob(tasks=3, user=0), KJob(tasks=1, user=1), KJob(tasks=1, user=2)]
    policy = fs_policy(fairshare_algorithm="fair_tree", fairshare_half_life_s=0)
    kernel = fairshare_kernel(policy, jobs, names(0, 1, 2, 3), names(), [100, 100, 100])
    assert kernel.fairshare_usage()[1] == pytest.approx([0.25, 0.75, 0.75, 1.0])


def test_fair_tree_ranks_groups_before_users() -> None:
    """Users 0 and 1 in group 0 (usage 200 and 0), user 2 in group 1 (usage 150).
    Group level: S = 1/2 each, U = 200/350 and 150/350, so group 1 (LF 1.17) comes
    before group 0 (LF 0.875): user 2 ranks first although user 1 used nothing."""
    jobs = [KJob(tasks=2, user=0, group=0), KJob(tasks=3, wall=50, user=2, group=1)]
    jobs.append(KJob(tasks=1, submit=0, user=1, group=0))
    policy = fs_policy(fairshare_algorithm="fair_tree", fairshare_half_life_s=0)
    kernel = kernel_with(node_capacity(2, 8), policy, [*jobs, KJob(tasks=16)])
    kernel.set_node_state(1, NodeState.DOWN)
    kernel.set_accounts(names(0, 1, 2), names(0, 1))
    for slot in (0, 1, 3):  # user 1's job is never submitted: known (and grouped), no usage
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 2
    kernel.finish(1, 50)
    kernel.finish(0, 100)
    kernel.schedule(100)
    usage, factor = kernel.fairshare_usage()
    assert usage.tolist() == [200.0, 0.0, 150.0]
    assert factor == pytest.approx([1 / 3, 2 / 3, 1.0])


# ----------------------------------------------------------------- dependencies


def test_afterany_child_starts_at_parent_end_plus_think_time() -> None:
    """2 cores. P (1 core) runs 0..80; C (2 cores) waits for it, then 30 s of think
    time: held (Dependency), then held (BeginTime) until 110, when it starts."""
    kernel = kernel_with(node_capacity(1, 2), Policy(), [KJob(), KJob(tasks=2, wall=50)])
    kernel.add_dependencies(np.array([1]), np.array([0]), "afterany", 30)
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    assert kernel.schedule(0) == 1
    assert kernel.why_pending(1) == Reason.Dependency
    kernel.finish(0, 80)
    assert kernel.schedule(80) == 0  # both cores free, but the think time runs
    assert (kernel.state_of(1), kernel.why_pending(1)) == (JobState.HELD, Reason.BeginTime)
    assert kernel.next_wakeup() == 110
    assert kernel.schedule(109) == 0
    assert kernel.schedule(110) == 1
    assert kernel.start_times().tolist() == [0, 110]
    assert kernel.next_wakeup() == -1


def test_a_feed_wakes_up_for_the_think_time() -> None:
    """The same through ReplayFeed: no event happens at 110, the feed's step
    returns the wake-up so that a pass runs then."""
    jobs = [KJob(), KJob(tasks=2, wall=50, submit=10)]
    kernel = kernel_with(node_capacity(1, 2), Policy(), jobs)
    kernel.add_dependencies(np.array([1]), np.array([0]), "afterany", 30)
    replay_jobs(kernel, jobs, [80, 50])
    assert kernel.start_times().tolist() == [0, 110]
    assert kernel.end_times().tolist() == [80, 160]


def test_a_dependent_jobs_age_counts_from_when_it_became_eligible() -> None:
    """Multifactor age is time eligible, not time since submit: C, submitted at 0,
    becomes eligible at 80 + 30 = 110; at 210 its age factor is 100/1000."""
    policy = Policy(order="multifactor", priority_weight_age=1000.0, priority_max_age_s=1000)
    kernel = kernel_with(node_capacity(1, 1), policy, [KJob(), KJob(), KJob(wall=500)])
    kernel.add_dependencies(np.array([1]), np.array([0]), "afterany", 30)
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    kernel.schedule(0)
    kernel.finish(0, 80)
    kernel.submit(2, 80)  # takes the core at 80, so C stays pending after 110
    kernel.schedule(80)
    kernel.schedule(110)
    assert kernel.why_pending(1) == Reason.Resources
    assert kernel.priority_factors(1, 210)[1]["age"] == pytest.approx(0.1)


def chain(kind: str) -> Kernel:
    """P, then C waits for P, then G waits for C, both with ``kind``; 1 core;
    P and C submitted at 0, G not yet; P running."""
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob(), KJob(submit=50)])
    kernel.add_dependencies(np.array([1, 2]), np.array([0, 1]), kind)
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    assert kernel.schedule(0) == 1
    return kernel


def test_afterok_on_a_failed_parent_cancels_the_chain() -> None:
    """P fails at 40: C (afterok P) can never run, so it is cancelled, and so is G
    (afterok C), transitively, the moment P ends; G is not submitted yet and is
    cancelled when it arrives."""
    kernel = chain("afterok")
    kernel.finish(0, 40, ok=0)
    assert kernel.state_of(1) == JobState.CANCELLED
    assert kernel.dependency_cancelled().tolist() == [0, 1, 0]
    assert kernel.end_times().tolist() == [40, 40, -1]
    assert kernel.schedule(40) == 0
    kernel.submit(2, 50)
    assert kernel.state_of(2) == JobState.CANCELLED
    assert kernel.dependency_cancelled().tolist() == [0, 1, 1]
    assert kernel.end_times().tolist() == [40, 40, 50]
    assert kernel.schedule(50) == 0
    assert kernel.start_times().tolist() == [0, -1, -1]
    assert kernel.why_pending(1) == Reason.NotPending


def test_afterok_chain_cancels_submitted_grandchildren_at_once() -> None:
    """With G already submitted (held on C), P's failure cancels both at 40."""
    kernel = chain("afterok")
    kernel.submit(2, 0)
    assert kernel.why_pending(2) == Reason.Dependency
    kernel.finish(0, 40, ok=0)
    states = kernel.job_states().tolist()
    assert states == [JobState.ENDED, JobState.CANCELLED, JobState.CANCELLED]
    assert kernel.dependency_cancelled().tolist() == [0, 1, 1]
    assert kernel.end_times().tolist() == [40, 40, 40]


@pytest.mark.parametrize(
    ("kind", "parent_end", "child_runs"),
    [
        ("afterany", "ok", True),
        ("afterany", "failed", True),
        ("afterany", "cancelled", True),
        ("afterok", "ok", True),
        ("afterok", "failed", False),
        ("afterok", "cancelled", False),
        ("afternotok", "ok", False),
        ("afternotok", "failed", True),
        ("afternotok", "cancelled", True),
    ],
)
def test_which_parent_ends_let_the_child_run(kind: str, parent_end: str, child_runs: bool) -> None:
    """A cancel counts as an end that is not ok."""
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob()])
    kernel.add_dependencies(np.array([1]), np.array([0]), kind)
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    kernel.schedule(0)
    if parent_end == "cancelled":
        kernel.cancel(0, 40)
    else:
        kernel.finish(0, 40, ok=int(parent_end == "ok"))
    kernel.schedule(40)
    if child_runs:
        assert kernel.start_times()[1] == 40
        assert kernel.dependency_cancelled()[1] == 0
    else:
        assert kernel.state_of(1) == JobState.CANCELLED
        assert kernel.dependency_cancelled()[1] == 1
        assert kernel.start_times()[1] == -1


def test_a_child_of_a_parent_that_already_ended() -> None:
    """P ran 0..50. Dependencies added afterwards count from P's end: C (think 30)
    submitted at 60 waits until 80; D (think 30) submitted at 100 starts at once;
    E (afterok) of the failed Q is cancelled when it is submitted."""
    jobs = [KJob(), KJob(), KJob(), KJob(), KJob()]  # P, C, D, Q, E
    kernel = kernel_with(node_capacity(1, 4), Policy(), jobs)
    kernel.submit(0, 0)
    kernel.submit(3, 0)
    kernel.schedule(0)
    kernel.finish(0, 50)
    kernel.finish(3, 50, ok=0)
    kernel.schedule(50)
    kernel.add_dependencies(np.array([1, 2]), np.array([0, 0]), "afterany", 30)
    kernel.add_dependencies(np.array([4]), np.array([3]), "afterok")
    kernel.submit(1, 60)
    assert kernel.why_pending(1) == Reason.BeginTime
    assert kernel.schedule(60) == 0
    assert kernel.next_wakeup() == 80
    assert kernel.schedule(80) == 1
    kernel.submit(2, 100)
    kernel.submit(4, 100)
    assert kernel.state_of(4) == JobState.CANCELLED
    assert kernel.schedule(100) == 1
    assert kernel.start_times().tolist() == [0, 80, 100, 0, -1]
    assert kernel.dependency_cancelled().tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize(
    ("child", "parent", "message"),
    [
        ([1], [1], "job slot 1 depends on itself"),
        ([0, 1, 2], [1, 2, 0], "dependency cycle between job slots 0, 1, 2"),
        ([0, 1, 3], [1, 0, 2], "dependency cycle between job slots 0, 1"),
        ([5], [0], "dependency 5 -> 0 names an unknown job slot"),
        ([0], [4], "dependency 0 -> 4 names an unknown job slot"),
        ([-1], [0], "dependency -1 -> 0 names an unknown job slot"),
    ],
)
def test_bad_dependencies_are_rejected_naming_the_slots(
    child: list[int], parent: list[int], message: str
) -> None:
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob()] * 4)
    with pytest.raises(KernelInputError, match=message):
        kernel.add_dependencies(np.array(child), np.array(parent))
    # nothing of the rejected batch was kept: every job runs, one after the other
    replay_jobs(kernel, [KJob()] * 4, [10] * 4)
    assert kernel.start_times().tolist() == [0, 10, 20, 30]


def test_a_negative_think_time_is_rejected() -> None:
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob()])
    with pytest.raises(KernelInputError, match="job slot 1 has a negative think time"):
        kernel.add_dependencies(np.array([1]), np.array([0]), "afterany", -5)


def test_a_dependency_after_the_child_was_submitted_is_refused() -> None:
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob()])
    kernel.submit(1, 0)
    with pytest.raises(ValueError, match="job slot 1 is already submitted"):
        kernel.add_dependencies(np.array([1]), np.array([0]))


def test_a_cycle_split_over_two_calls_is_rejected() -> None:
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob()])
    kernel.add_dependencies(np.array([1]), np.array([0]))
    with pytest.raises(KernelInputError, match="cycle"):
        kernel.add_dependencies(np.array([0]), np.array([1]))


# ------------------------------------------------------------------------ holds


def test_a_held_job_never_starts_until_released() -> None:
    """2 cores: X runs 0..100; A (1 core) then B (1 core) queue. A is held at 10:
    when X ends B starts and A, with a core free, stays held; released at 150,
    A starts then."""
    jobs = [KJob(tasks=2), KJob(), KJob()]
    kernel = kernel_with(node_capacity(1, 2), Policy(), jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    kernel.hold(1)
    assert kernel.schedule(10) == 0
    assert (kernel.state_of(1), kernel.why_pending(1)) == (JobState.HELD, Reason.Held)
    assert kernel.pending_jobs().tolist() == [2]
    kernel.finish(0, 100)
    assert kernel.schedule(100) == 1
    assert kernel.started_jobs().tolist() == [2]
    assert kernel.free_total()[0] == 1
    assert kernel.schedule(120) == 0
    assert kernel.why_pending(1) == Reason.Held
    kernel.release(1, 150)
    assert kernel.state_of(1) == JobState.PENDING
    assert kernel.schedule(150) == 1
    assert kernel.start_times().tolist() == [0, 150, 100]


def test_only_a_pending_job_is_held_and_only_a_held_one_released() -> None:
    kernel = kernel_with(node_capacity(1, 1), Policy(), [KJob(), KJob()])
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    kernel.schedule(0)
    with pytest.raises(ValueError, match="job slot 0 is not pending"):
        kernel.hold(0)
    with pytest.raises(ValueError, match="job slot 1 is not held"):
        kernel.release(1, 5)


def test_a_released_job_waits_its_turn_again() -> None:
    """Released while the core is busy, A is pending again (Resources), and its
    multifactor age counts from the release, not from its submit."""
    policy = Policy(order="multifactor", priority_weight_age=1000.0, priority_max_age_s=1000)
    kernel = kernel_with(node_capacity(1, 1), policy, [KJob(wall=500), KJob()])
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    kernel.schedule(0)
    kernel.hold(1)
    kernel.release(1, 200)
    assert kernel.why_pending(1) == Reason.Resources
    assert kernel.priority_factors(1, 300)[1]["age"] == pytest.approx(0.1)


# --------------------------------------------------------- advance reservations
#
# 3 nodes of 2 cores; nodes 1 and 2 reserved for user 0 over [100, 200).


def reserved(jobs: list[KJob], backfill: str = "easy") -> Kernel:
    kernel = kernel_with(node_capacity(3, 2), Policy(backfill=backfill), jobs)  # type: ignore[arg-type]
    kernel.add_reservation(100, 200, np.array([1, 2]), "user", 0)
    return kernel


def test_other_users_use_reserved_nodes_only_if_they_end_before_the_window() -> None:
    """B (user 1, 4 cores, 100 s) ends at 100 = the window's start: it may use
    node 1. C (user 1, 2 cores, 150 s) would overlap: node 2 is idle but reserved,
    so C waits (Reservation) and starts at 100 on node 0, the unreserved one."""
    kernel = reserved([KJob(tasks=4, wall=100, user=1), KJob(tasks=2, wall=150, user=1)])
    kernel.submit(0, 0)
    kernel.submit(1, 0)
    assert kernel.schedule(0) == 1
    nodes, tasks = kernel.job_allocation(0)
    assert (nodes.tolist(), tasks.tolist()) == ([0, 1], [2, 2])
    assert kernel.free_per_node()[:, 0].tolist() == [0, 0, 2]
    assert kernel.why_pending(1) == Reason.Reservation
    kernel.finish(0, 100)
    assert kernel.schedule(100) == 1
    assert kernel.job_allocation(1)[0].tolist() == [0]


def test_the_owner_runs_in_the_window_on_the_reserved_nodes_only() -> None:
    """At 100 the machine is idle. User 0's jobs of 2 cores and 50 s go to nodes 1
    and 2 (first fit would have taken node 0 first); the third waits although
    node 0 is idle, and runs on node 1 when the first ends."""
    kernel = reserved([KJob(tasks=2, wall=50, user=0, submit=100) for _ in range(3)])
    for slot in range(3):
        kernel.submit(slot, 100)
    assert kernel.schedule(100) == 2
    assert [kernel.job_allocation(s)[0].tolist() for s in range(2)] == [[1], [2]]
    assert kernel.free_per_node()[:, 0].tolist() == [2, 0, 0]
    assert kernel.why_pending(2) == Reason.Reservation
    kernel.finish(0, 150)
    assert kernel.schedule(150) == 1
    assert kernel.job_allocation(2)[0].tolist() == [1]


def test_an_owner_job_that_outlasts_the_window_is_not_in_it() -> None:
    """User 0's job of 150 s at 100 would end after the window: it is treated as
    anyone's, may not use the reserved nodes and takes node 0."""
    kernel = reserved([KJob(tasks=2, wall=150, user=0, submit=100)])
    kernel.submit(0, 100)
    assert kernel.schedule(100) == 1
    assert kernel.job_allocation(0)[0].tolist() == [0]


def test_after_the_window_the_nodes_are_free_for_everyone() -> None:
    """D (user 1, 6 cores, 100 s) submitted at 50 would overlap the window: it
    waits until 200, then takes every node."""
    kernel = reserved([KJob(tasks=6, wall=100, user=1, submit=50)])
    kernel.submit(0, 50)
    assert kernel.schedule(50) == 0
    assert kernel.schedule(199) == 0
    assert kernel.schedule(200) == 1
    assert kernel.job_allocation(0)[0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("backfill", ["easy", "conservative"])
def test_an_idle_unreserved_node_takes_other_work_during_the_window(backfill: str) -> None:
    """At 100 user 0's jobs fill nodes 1 and 2 and a third waits for them (the
    head; it can only ever use nodes 1 and 2). U (user 1, 2 cores, 50 s) fits on
    the idle node 0 and cannot delay anyone: it should start at 100."""
    jobs = [KJob(tasks=2, wall=50, user=0, submit=100) for _ in range(3)]
    jobs.append(KJob(tasks=2, wall=50, user=1, submit=100))
    kernel = reserved(jobs, backfill)
    for slot in range(4):
        kernel.submit(slot, 100)
    kernel.schedule(100)
    assert kernel.start_times()[3] == 100


@pytest.mark.parametrize(
    ("backfill", "owner_start"), [("none", 2100), ("easy", 1000), ("conservative", 1000)]
)
def test_an_owner_job_behind_a_waiting_job_starts_in_its_window(
    backfill: str, owner_start: int
) -> None:
    """2 one-core nodes; node 1 reserved for user 0 over [1000, 2000).

    A (user 1, 1 core, 2000 s) starts at 0 on node 0 (it would overlap the
    window: node 1 is not for it). B (user 1, 2 cores, 100 s) waits for both
    nodes: A's end and the window's end, 2000. C (user 0, 1 core, 900 s,
    submitted at 200) is queued behind B; at 200 it would overlap the window's
    start, so it waits; at 1000 it is inside its window (1000 + 900 <= 2000)
    and node 1 is idle: it starts there under backfilling (B cannot use node 1
    before 2000 anyway), and ends at 1900; B starts at 2000. Under ``none`` C
    waits behind B: 2000 + 100."""
    jobs = [
        KJob(tasks=1, wall=2000, user=1),
        KJob(tasks=2, wall=100, user=1),
        KJob(tasks=1, wall=900, user=0, submit=200),
    ]
    kernel = kernel_with(node_capacity(2, 1), Policy(backfill=backfill), jobs)  # type: ignore[arg-type]
    kernel.add_reservation(1000, 2000, np.array([1]), "user", 0)
    replay_jobs(kernel, jobs, [job.wall for job in jobs])
    assert kernel.start_times().tolist() == [0, 2000, owner_start]
    assert kernel.end_times().tolist() == [2000, 2100, owner_start + 900]


def test_reservations_sharing_a_node_may_not_overlap_in_time() -> None:
    kernel = reserved([KJob()])
    with pytest.raises(KernelInputError, match="overlaps reservation 0 \\[100, 200\\) on node 2"):
        kernel.add_reservation(150, 300, np.array([0, 2]), "user", 1)
    kernel.add_reservation(200, 300, np.array([2]), "user", 1)  # after it: fine
    kernel.add_reservation(150, 300, np.array([0]), "user", 1)  # other nodes: fine


# ------------------------------------------------------------ starvation guard
#
# 4 cores, SJF, EASY. W (4 cores, 100 s) arrives at 0 with a stream of short
# jobs (2 cores, 10 s, one every 5 s from 0 to 195). Each short job sorts before
# W and starts as soon as 2 cores are free, so two always run and W, the head,
# never finds 4 cores: without the guard it starts only when the stream has
# dried up, at 205 (the last short job, 195..205).
# With a limit of 50 s: at the pass at 55 W has waited 55 > 50 s: it goes to the
# front. The jobs running then end by 55 + 10 (longest walltime): W is reserved
# at 60 (the short job of 50 ends), the short job arriving at 55 may not start
# (it would end at 65 > 60 and no core is spare), and W starts at 60.

STREAM = [KJob(tasks=4, wall=100)] + [KJob(tasks=2, wall=10, submit=5 * k) for k in range(40)]


def stream_starts(limit: int, on_pass: Callable[[Kernel, int], None] | None = None) -> list[int]:
    kernel = kernel_with(node_capacity(4, 1), Policy(order="sjf", starvation_limit_s=limit), STREAM)
    replay_jobs(kernel, STREAM, [job.wall for job in STREAM], on_pass=on_pass)
    return kernel.start_times().tolist()


def test_without_the_guard_a_stream_of_short_jobs_starves_a_wide_one() -> None:
    starts = stream_starts(0)
    assert starts[0] == 205
    assert starts[1:] == [5 * k for k in range(40)]  # every short job at once


def test_the_starvation_guard_bounds_the_wait() -> None:
    promoted: list[tuple[int, int]] = []

    def watch(kernel: Kernel, now: int) -> None:
        if not promoted and kernel.pending_jobs().tolist()[:1] == [0] and now > 50:
            running = [s for s in range(kernel.n_jobs) if kernel.state_of(s) == JobState.RUNNING]
            promoted.append((now, max(STREAM[s].wall for s in running)))

    starts = stream_starts(50, watch)
    assert promoted == [(55, 10)]
    assert starts[0] == 60 <= 55 + 10
    # short jobs: 0..50 at once; 55 waits for W (60..160) then goes; later ones queue
    assert starts[1:12] == [5 * k for k in range(11)]
    assert starts[12] == 160


# ----------------------------------------------------------------------- limits


def test_running_jobs_cap_per_group() -> None:
    """One running job per group: users 0 and 1 share group 0, user 2 is in group 1.
    4 cores, three 1-core jobs: group 0's second waits (GroupLimit), group 1's runs."""
    jobs = [KJob(user=0, group=0), KJob(user=1, group=0), KJob(user=2, group=1)]
    kernel = kernel_with(node_capacity(1, 4), Policy(max_running_jobs_per_group=1), jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 2
    assert kernel.start_times().tolist() == [0, -1, 0]
    assert kernel.why_pending(1) == Reason.GroupLimit
    assert kernel.usage("group").tolist() == [[1, 1, 0], [1, 1, 0]]
    kernel.finish(0, 30)
    assert kernel.schedule(30) == 1
    assert kernel.start_times()[1] == 30


def test_gpu_cap_per_user() -> None:
    """2 nodes of 4 cores and 2 GPUs; at most 2 GPUs per user. User 0's first job
    takes 2 GPUs; its second (1 GPU) waits with GPUs free; user 1's 2-GPU job runs."""
    jobs = [KJob(gpus_per_task=2, user=0), KJob(gpus_per_task=1, user=0)]
    jobs.append(KJob(gpus_per_task=2, user=1))
    kernel = kernel_with(node_capacity(2, 4, gpus=2), Policy(max_gpus_per_user=2), jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 2
    assert kernel.start_times().tolist() == [0, -1, 0]
    assert kernel.why_pending(1) == Reason.UserLimit
    assert kernel.usage("user").tolist() == [[1, 1, 2], [1, 1, 2]]
    assert kernel.free_total()[2] == 0
    kernel.finish(0, 30)
    assert kernel.schedule(30) == 1
    assert kernel.job_allocation(1)[0].tolist() == [0]


@pytest.mark.parametrize(("cap", "third_starts"), [(2, -1), (0, 0)])
def test_queued_jobs_cap_per_user(cap: int, third_starts: int) -> None:
    """4 cores, X (user 1, 3 cores) runs until 100. User 0 queues P1 (2 cores),
    P2 (2 cores), P3 (1 core, 10 s). P1 is the head (shadow 100) and P3 would
    backfill on the free core, but with at most 2 queued jobs per user considered,
    P3 (user 0's third) waits with UserLimit though the core is free."""
    jobs = [KJob(tasks=3, user=1), KJob(tasks=2, user=0), KJob(tasks=2, user=0)]
    jobs.append(KJob(tasks=1, wall=10, user=0))
    kernel = kernel_with(node_capacity(1, 4), Policy(max_queued_jobs_per_user=cap), jobs)
    for slot in range(4):
        kernel.submit(slot, 0)
    kernel.schedule(0)
    assert kernel.start_times().tolist() == [0, -1, -1, third_starts]
    if cap:
        assert kernel.why_pending(3) == Reason.UserLimit
        assert kernel.why_pending(1) == Reason.Resources
        assert kernel.free_total()[0] == 1


def test_a_job_started_by_the_pass_no_longer_counts_as_queued() -> None:
    """At most 1 queued job per user: the cap counts the user's jobs still waiting,
    so once the first starts the second is the only one queued and starts in the
    same pass; the queue after the pass agrees (nothing left to hold back)."""
    jobs = [KJob(user=0), KJob(user=0), KJob(tasks=4, user=0)]
    kernel = kernel_with(node_capacity(1, 4), Policy(max_queued_jobs_per_user=1), jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    # 0 and 1 start; 2 (4 cores) is the one queued job of user 0 left: it waits for cores
    assert kernel.schedule(0) == 2
    assert kernel.start_times().tolist() == [0, 0, -1]
    assert kernel.why_pending(2) == Reason.Resources


def test_the_reason_names_the_queued_cap_that_holds_the_job_back() -> None:
    """Two 4-core jobs of user 0 queue behind a running one: with 1 queued job
    considered, the second waits for the cap, the first for resources."""
    jobs = [KJob(tasks=4, user=1), KJob(tasks=4, user=0), KJob(tasks=4, user=0)]
    kernel = kernel_with(node_capacity(1, 4), Policy(max_queued_jobs_per_user=1), jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 1
    assert kernel.why_pending(1) == Reason.Resources
    assert kernel.why_pending(2) == Reason.UserLimit


def test_running_jobs_cap_per_qos() -> None:
    """QoS "short" runs at most one job at a time; jobs without a QoS are not capped."""
    policy = Policy(qos=(QoS("short", running_jobs=1),))
    jobs = [KJob(qos=0), KJob(qos=0), KJob(), KJob()]
    kernel = kernel_with(node_capacity(1, 4), policy, jobs)
    for slot in range(4):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 3
    assert kernel.start_times().tolist() == [0, -1, 0, 0]
    assert kernel.why_pending(1) == Reason.QOSLimit
    assert kernel.usage("qos").tolist() == [[1, 1, 0]]


def test_a_capped_job_gets_no_reservation() -> None:
    """A job held back by a cap is never the head: a job behind it that fits
    starts, and the capped one does not block it (EASY, 4 cores, 1 job per user).
    X (user 0, 1 core) runs; Y (user 0, 4 cores) is capped; Z (user 1, 3 cores)
    would be delayed by a reservation for Y, but Y has none: Z starts at 0."""
    jobs = [KJob(user=0), KJob(tasks=4, user=0), KJob(tasks=3, wall=1000, user=1)]
    kernel = kernel_with(node_capacity(1, 4), Policy(max_running_jobs_per_user=1), jobs)
    for slot in range(3):
        kernel.submit(slot, 0)
    assert kernel.schedule(0) == 2
    assert kernel.start_times().tolist() == [0, -1, 0]
    assert kernel.why_pending(1) == Reason.UserLimit
