"""Invariants of the policy features, checked after every pass on random workloads.

The reference scheduler (tests/reference.py) is a pool of cores without GPUs,
QoS, multifactor priority or the starvation guard; these properties cover what
it cannot: caps are never exceeded on any level and resource, nodes are never
over-allocated on heterogeneous clusters, dependencies are respected under
every order, fairshare balances two equal users, and the starvation guard
bounds every wait.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.kernel import JOB_SPEC_DTYPE, JobState, Kernel, node_capacity
from htcsim.policy import Policy, QoS
from tests.harness import replay, run_kernel_detailed
from tests.reference import RefJob, dependency_met
from tests.test_policy_properties import Case, workloads

MODES = ("none", "easy", "conservative")
ORDERS = ("fcfs", "sjf", "priority", "multifactor")
PLACEMENTS = ("first_fit", "best_fit", "spread", "cons_tres")
LEVELS = ("user", "group", "qos")
RUNNING = int(JobState.RUNNING)


def settings_for(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------- heterogeneous clusters


@dataclass
class Scenario:
    """Nodes of different sizes and jobs of several tasks, in submit order (slot k = job k)."""

    capacity: np.ndarray  # (n_nodes, 4): cores, mem_mib, gpus, scratch
    specs: np.ndarray  # JOB_SPEC_DTYPE
    duration: np.ndarray  # actual run of each job (it is killed at its walltime)


@st.composite
def scenarios(draw: st.DrawFn, max_jobs: int = 20) -> Scenario:
    """Random node capacities with memory and GPUs; every job fits the empty cluster.

    A task is cut from one node's capacity (so some node can hold it), and the
    task count is at most what the empty cluster can place, so every job can
    start some day: a never-placeable job would only test the validation.
    """
    n_nodes = draw(st.integers(1, 5))
    capacity = np.zeros((n_nodes, 4), dtype=np.int64)
    for n in range(n_nodes):
        capacity[n, 0] = draw(st.integers(1, 8))
        capacity[n, 1] = draw(st.sampled_from([0, 1024, 4096, 8192]))
        capacity[n, 2] = draw(st.integers(0, 4))
    n_jobs = draw(st.integers(1, max_jobs))
    specs = np.zeros(n_jobs, dtype=JOB_SPEC_DTYPE)
    duration = np.zeros(n_jobs, dtype=np.int64)
    submit = 0
    for k in range(n_jobs):
        node = capacity[draw(st.integers(0, n_nodes - 1))]
        per_task = np.array(
            [
                draw(st.integers(1, int(node[0]))),
                draw(st.integers(0, int(node[1]) // 512)) * 512,
                draw(st.integers(0, int(node[2]))),
                0,
            ],
            dtype=np.int64,
        )
        placeable = sum(
            min(int(cap[r]) // int(per_task[r]) for r in range(3) if per_task[r] > 0)
            for cap in capacity
        )
        submit += draw(st.sampled_from([0, 0, 1, 5, 20]))
        wall = draw(st.integers(1, 50))
        specs[k]["job_id"] = k + 1
        specs[k]["submit_s"] = submit
        specs[k]["walltime_s"] = wall
        specs[k]["per_task"] = per_task
        specs[k]["n_tasks"] = draw(st.integers(1, min(placeable, 4)))
        specs[k]["user_idx"] = draw(st.integers(-1, 3))
        specs[k]["group_idx"] = draw(st.integers(-1, 2))
        specs[k]["qos_idx"] = draw(st.integers(-1, 1))
        specs[k]["priority"] = float(draw(st.integers(0, 3)))
        duration[k] = draw(st.integers(0, wall + 10))
    return Scenario(capacity, specs, np.minimum(duration, specs["walltime_s"]))


@st.composite
def capped_policies(draw: st.DrawFn) -> Policy:
    """Random caps on every level (0: none) and two QoS with caps of their own."""
    count = st.integers(0, 3)
    cores = st.sampled_from([0, 0, 2, 4, 8, 12])
    gpus = st.sampled_from([0, 0, 1, 2, 4])
    qos = tuple(
        QoS(
            name,
            priority=float(draw(st.integers(0, 10))),
            running_jobs=draw(count),
            cores=draw(cores),
            gpus=draw(gpus),
            queued_jobs=draw(count),
        )
        for name in ("normal", "high")
    )
    return Policy(
        order=draw(st.sampled_from(ORDERS)),
        backfill=draw(st.sampled_from(MODES)),
        placement=draw(st.sampled_from(PLACEMENTS)),
        priority_weight_size=float(draw(st.integers(0, 1000))),
        priority_weight_qos=float(draw(st.integers(0, 1000))),
        priority_interval_s=draw(st.sampled_from([1, 10, 300])),
        qos=qos,
        max_running_jobs_per_user=draw(count),
        max_cores_per_user=draw(cores),
        max_gpus_per_user=draw(gpus),
        max_queued_jobs_per_user=draw(count),
        max_running_jobs_per_group=draw(count),
        max_cores_per_group=draw(cores),
        max_gpus_per_group=draw(gpus),
        max_queued_jobs_per_group=draw(count),
    )


def run_scenario(
    scenario: Scenario, policy: Policy, check: Callable[[Kernel, int], None]
) -> Kernel:
    """Replay a scenario to the end, calling ``check`` after every pass."""
    kernel = Kernel(scenario.capacity, policy)
    kernel.add_jobs(scenario.specs)
    replay(kernel, scenario.specs["submit_s"], scenario.duration, on_pass=check)
    return kernel


def held_by_running(specs: np.ndarray, running: np.ndarray, level: str, n: int) -> np.ndarray:
    """(n, 3) running jobs, cores, GPUs per entity of a level, from the running jobs alone."""
    column = {"user": "user_idx", "group": "group_idx", "qos": "qos_idx"}[level]
    out = np.zeros((n, 3), dtype=np.int64)
    for j in np.flatnonzero(running):
        e = int(specs[j][column])
        if e >= 0:
            out[e] += (
                1,
                specs[j]["per_task"][0] * specs[j]["n_tasks"],
                specs[j]["per_task"][2] * specs[j]["n_tasks"],
            )
    return out


def caps_of(policy: Policy, level: str, n: int) -> np.ndarray:
    """(n, 3) caps on running jobs, cores, GPUs per entity (0: none)."""
    if level == "qos":
        return np.array([q.limits[:3] for q in policy.qos], dtype=np.int64).reshape(-1, 3)[:n]
    return np.tile(np.array(policy.limits_of(level)[:3], dtype=np.int64), (n, 1))


@settings_for(60)
@given(scenarios(), capped_policies())
def test_no_cap_is_ever_exceeded(scenario: Scenario, policy: Policy) -> None:
    """After every pass, the kernel's usage is what the running jobs hold, within every cap."""
    specs = scenario.specs
    sizes = {
        "user": int(specs["user_idx"].max()) + 1,
        "group": int(specs["group_idx"].max()) + 1,
        "qos": len(policy.qos),
    }

    def check(kernel: Kernel, now: int) -> None:
        running = kernel.job_states() == RUNNING
        for level in LEVELS:
            usage = kernel.usage(level)
            assert usage.shape == (sizes[level], 3), level
            expected = held_by_running(specs, running, level, sizes[level])
            assert (usage == expected).all(), f"{level} usage at t={now}"
            caps = caps_of(policy, level, sizes[level])
            over = (caps > 0) & (usage > caps)
            assert not over.any(), f"{level} cap exceeded at t={now}: {usage} > {caps}"

    kernel = run_scenario(scenario, policy, check)
    # the replay ran to the end: nothing is left running
    assert not (kernel.job_states() == RUNNING).any()


def test_caps_on_gpus_and_qos_hold_jobs_back() -> None:
    """Hand-computed: 1 node, 8 cores, 4 GPUs; each job 1 core, 1 GPU, 10 s, all at t=0.

    The user may hold 2 GPUs, and QoS "high" one running job. Jobs 1-3 are
    user 0 in no QoS: 1 and 2 start at 0, 3 waits for a GPU of its user (t=10).
    Jobs 4-5 are user 1 in QoS "high": 4 starts at 0, 5 after it (t=10).
    """
    specs = np.zeros(5, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = np.arange(1, 6)
    specs["walltime_s"] = 10
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = 1
    specs["per_task"][:, 2] = 1
    specs["user_idx"] = [0, 0, 0, 1, 1]
    specs["group_idx"] = -1
    specs["qos_idx"] = [-1, -1, -1, 0, 0]
    policy = Policy(max_gpus_per_user=2, qos=(QoS("high", running_jobs=1),))
    kernel = Kernel(node_capacity(1, 8, gpus=4), policy)
    kernel.add_jobs(specs)
    replay(kernel, specs["submit_s"], np.full(5, 10, dtype=np.int64))
    assert kernel.start_times().tolist() == [0, 0, 10, 0, 10]


@settings_for(60)
@given(scenarios(), st.sampled_from(MODES), st.sampled_from(PLACEMENTS))
def test_nodes_are_never_over_allocated(scenario: Scenario, backfill: str, placement: str) -> None:
    """Per-node usage recomputed from the running jobs' allocations, after every pass."""
    specs = scenario.specs
    capacity = scenario.capacity
    policy = Policy(backfill=backfill, placement=placement)  # type: ignore[arg-type]
    started = np.zeros(len(specs), dtype=bool)

    def check(kernel: Kernel, now: int) -> None:
        used = np.zeros_like(capacity)
        for j in range(len(specs)):
            nodes, tasks = kernel.job_allocation(j)
            if kernel.state_of(j) != RUNNING:
                assert len(nodes) == 0, f"job slot {j} holds nodes while not running"
                continue
            started[j] = True
            assert (tasks > 0).all()
            assert int(tasks.sum()) == int(specs[j]["n_tasks"]), f"job slot {j} tasks placed"
            for node, k in zip(nodes, tasks, strict=True):
                used[node] += k * specs[j]["per_task"]
        assert (used <= capacity).all(), f"a node is over-allocated at t={now}"
        assert (kernel.free_per_node() == capacity - used).all(), f"free per node at t={now}"
        assert (kernel.free_total() == (capacity - used).sum(axis=0)).all()

    kernel = run_scenario(scenario, policy, check)
    assert started.all(), "every job fits the empty cluster, so every job runs"
    assert (kernel.free_per_node() == capacity).all()


# ----------------------------------------------------------- dependencies


@st.composite
def any_policy(draw: st.DrawFn) -> Policy:
    """Every order (multifactor too) and mode, with or without the starvation guard."""
    return Policy(
        order=draw(st.sampled_from(ORDERS)),
        backfill=draw(st.sampled_from(MODES)),
        placement=draw(st.sampled_from(PLACEMENTS)),
        starvation_limit_s=draw(st.sampled_from([0, 0, 5, 50])),
        priority_weight_size=float(draw(st.integers(0, 1000))),
        priority_interval_s=draw(st.sampled_from([1, 7, 300])),
    )


def parent_outcome(jobs: list[RefJob], start: list[int], end: list[int], p: int) -> bool | None:
    """Whether parent ``p`` ended well (a cancellation: not ok); None if it never ended."""
    if end[p] < 0:
        return None
    return jobs[p].ok if start[p] >= 0 else False


@settings_for(80)
@given(workloads(deps=True), any_policy())
def test_dependencies_are_respected_under_every_policy(case: Case, policy: Policy) -> None:
    """A child starts only after every parent ended (plus the think time) in a way its
    dependency accepts; a child whose dependency a parent's end rules out never starts
    and is cancelled; every other job runs (no limits: each fits the cluster)."""
    jobs, n_nodes, cpn = case
    run = run_kernel_detailed(jobs, n_nodes, cpn, policy.backfill, policy=policy)
    for j, job in enumerate(jobs):
        outcomes = [
            (parent_outcome(jobs, run.start, run.end, p), kind, delay)
            for p, kind, delay in job.deps
        ]
        ruled_out = any(ok is not None and not dependency_met(kind, ok) for ok, kind, _ in outcomes)
        if ruled_out:
            assert run.start[j] == -1, f"job {j} started though a dependency was ruled out"
            assert run.cancelled[j], f"job {j} should be cancelled"
            continue
        assert not run.cancelled[j], f"job {j} was cancelled with every dependency met"
        assert run.start[j] >= job.submit, f"job {j} started before its submit"
        for (p, _, delay), (ok, _, _) in zip(job.deps, outcomes, strict=True):
            assert ok is not None, f"job {j} ran though parent {p} never ended"
            assert run.start[j] >= run.end[p] + delay, f"job {j} started before parent {p} + think"


def test_afterok_children_of_a_failed_parent_never_start() -> None:
    """Hand-computed chain on 1 core: A fails at 10; B (afterok A) is cancelled at 10;
    C (afterany B, think 5) runs from 15; D (afternotok A) runs from 10 (before C, which
    is not eligible yet); E (afterok B) is cancelled with B, transitively."""
    jobs = [
        RefJob(1, 0, 1, 10, 10, ok=False),
        RefJob(2, 0, 1, 10, 10, deps=[(0, "afterok", 0)]),
        RefJob(3, 0, 1, 10, 10, deps=[(1, "afterany", 5)]),
        RefJob(4, 0, 1, 10, 10, deps=[(0, "afternotok", 0)]),
        RefJob(5, 0, 1, 10, 10, deps=[(1, "afterok", 0)]),
    ]
    run = run_kernel_detailed(jobs, 1, 1, "easy")
    assert run.start == [0, -1, 20, 10, -1]
    assert run.end == [10, 10, 30, 20, 10]
    assert run.cancelled == [False, True, False, False, True]


# ----------------------------------------------------------- fairshare


def fairshare_run(
    n_nodes: int, cores_per_node: int, wall: int, per_user: int, policy: Policy
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two users, ``per_user`` identical one-core jobs each at t=0; (start, end, user)."""
    n = 2 * per_user
    specs = np.zeros(n, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = np.arange(1, n + 1)  # user 0's jobs first: it wins every tie
    specs["walltime_s"] = wall
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = 1
    specs["user_idx"] = np.repeat([0, 1], per_user)
    specs["group_idx"] = 0
    specs["qos_idx"] = -1
    kernel = Kernel(node_capacity(n_nodes, cores_per_node), policy)
    kernel.add_jobs(specs)
    kernel.set_accounts(np.array([0, 1]), np.array([0]))
    replay(kernel, specs["submit_s"], np.full(n, wall, dtype=np.int64))
    return kernel.start_times(), kernel.end_times(), specs["user_idx"]


def delivered_while_both_wait(
    start: np.ndarray, end: np.ndarray, user: np.ndarray
) -> tuple[int, int]:
    """Core-seconds each user got before the first of them ran out of pending jobs.

    The window ends at the earliest "last start" of a user: until then both
    had a job waiting, so both demanded the whole cluster.
    """
    window = min(int(start[user == u].max()) for u in (0, 1))
    inside = np.clip(np.minimum(end, window) - np.minimum(start, window), 0, None)
    return int(inside[user == 0].sum()), int(inside[user == 1].sum())


@settings_for(20)
@given(
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(50, 200),
    st.integers(30, 300),
    st.sampled_from([0, 600, 3600, 86400]),
    st.sampled_from(["classic", "fair_tree"]),
)
def test_fairshare_splits_the_cluster_between_equal_users(
    n_nodes: int, cpn: int, wall: int, interval: int, half_life: int, algorithm: str
) -> None:
    """Equal shares, equal saturating demand: core-seconds within 5% of each other.

    The lead of one user is bounded by about cores x (walltime + interval)
    core-seconds (priorities flip at the next recomputation, running jobs finish
    their walltime), so the demand is sized to make the window some 60 times
    that: the 5% tolerance is then loose enough to hold for any parameters, and
    tight enough that ignoring fairshare (user 0 first in every tie) fails it.
    """
    per_user = 60 * n_nodes * cpn * max(wall, interval) // wall
    fair = Policy(
        order="multifactor",
        backfill="easy",
        priority_weight_age=0.0,
        priority_weight_fairshare=1000.0,
        priority_interval_s=interval,
        fairshare_half_life_s=half_life,
        fairshare_algorithm=algorithm,  # type: ignore[arg-type]
    )
    got = delivered_while_both_wait(*fairshare_run(n_nodes, cpn, wall, per_user, fair))
    assert min(got) > 0
    assert abs(got[0] - got[1]) <= 0.05 * max(got), got
    # the control: without the fairshare weight, user 0 (lower ids) takes it all first
    blind = Policy(order="multifactor", backfill="easy", priority_weight_age=0.0)
    control = delivered_while_both_wait(*fairshare_run(n_nodes, cpn, wall, per_user, blind))
    assert control[1] == 0


# ----------------------------------------------------------- starvation guard
#
# The bound. Let W be the longest requested time, L the limit, e_j when job j
# became eligible (its submit: no dependencies here), p_j the first pass with
# p_j - e_j > L at which j is still waiting (it is promoted there), g_j the
# interval between p_j and the pass before it, and k_j the starved jobs still
# waiting after pass p_j that sort before j (starved jobs sort among
# themselves by submit and job id).
#
# 1. p_j <= e_j + L + g_j: the pass before p_j came at most L after e_j.
#    And g_j <= W: after a pass with a job waiting something runs (every job
#    fits the empty cluster), and its end, at most W later, is a pass.
# 2. Starved jobs sort first, so the first of them is the head: EASY gives it
#    a reservation no later than the running jobs' requested ends (<= now + W)
#    and backfill never delays it. When it starts (pass T), the next starved
#    job is the head, reserved by T + W. No job starved later sorts before j
#    (it became eligible later, so it was submitted later or with a higher id
#    at the same time). So j starts by p_j + (k_j + 1) W, and waits at most
#    L + g_j + (k_j + 1) W.
#
# With one starved job at a time (k_j = 0) that is the strict bound L + g_j + W.
# It cannot hold when several starve at once: each of them may need a whole
# walltime of the cluster (test_several_starving_jobs_queue_up_behind_each_other).


@st.composite
def starvation_policies(draw: st.DrawFn) -> Policy:
    return Policy(
        order=draw(st.sampled_from(["sjf", "multifactor"])),
        backfill="easy",
        starvation_limit_s=draw(st.integers(1, 120)),
        priority_weight_age=float(draw(st.sampled_from([0, 1000]))),
        priority_weight_size=float(draw(st.integers(0, 1000))),
        priority_favor=draw(st.sampled_from(["small", "large"])),
        priority_interval_s=draw(st.sampled_from([1, 30, 300])),
    )


@pytest.mark.parametrize("arrivals", ["burst", "stream"])
@settings_for(60)
@given(workloads(max_jobs=30), starvation_policies())
def test_the_starvation_guard_bounds_every_wait(arrivals: str, case: Case, policy: Policy) -> None:
    """Every wait is within L + g_j + (k_j + 1) W (the bound above).

    ``burst``: every job is submitted at 0, so every later pass follows a
    completion. ``stream``: jobs arrive over time, so passes with arrivals
    alone follow passes that backfilled against the profile (the case of
    test_a_starved_head_keeps_its_reservation_when_jobs_arrive).
    """
    jobs, n_nodes, cpn = case
    if arrivals == "burst":
        for job in jobs:
            job.submit = 0
    limit = policy.starvation_limit_s
    longest = max(job.walltime for job in jobs)
    passes: list[int] = []
    run = run_kernel_detailed(
        jobs, n_nodes, cpn, "easy", policy=policy, on_pass=lambda _k, now: passes.append(now)
    )
    times = sorted(set(passes))
    key = [(job.submit, job.job_id) for job in jobs]
    for j, job in enumerate(jobs):
        assert run.start[j] >= job.submit
        wait = run.start[j] - job.submit
        if wait <= limit:
            continue
        promoted = min(t for t in times if t - job.submit > limit)
        assert promoted <= run.start[j]
        gap = promoted - max(t for t in times if t < promoted)
        assert gap <= longest, f"no pass for {gap} s while job {j} waited"
        ahead = sum(
            1
            for i, other in enumerate(jobs)
            if key[i] < key[j] and promoted - other.submit > limit and run.start[i] > promoted
        )
        bound = limit + gap + (ahead + 1) * longest
        assert wait <= bound, f"job {j} waited {wait} > {bound} ({ahead} starved ahead)"


# 2 cores, FCFS, EASY. J1 (2 cores, 8 s) runs 0-8. J2 (1 core, 4 s), J3 (2 cores, 2 s)
# at 1 and J4 (2 cores, 7 s) at 2 wait; at the pass at 1 J2 is the head with extra 1.
# At 8 all three have waited more than 4 s: J2 starts, J3 is the head, reserved at 12,
# J4 reserved after it at 14. J5 (1 core, 8 s) arrives at 10: run to 18 it would keep a
# core J3 needs at 12, so it must wait (starts at 21, after J4).
STARVED_AT_8 = [
    RefJob(1, 0, 2, 8, 8),
    RefJob(2, 1, 1, 4, 4),
    RefJob(3, 1, 2, 2, 2),
    RefJob(4, 2, 2, 7, 7),
    RefJob(5, 10, 1, 8, 8),
]


@pytest.mark.parametrize("limit", [0, 4], ids=["no guard", "guard"])
def test_a_starved_head_keeps_its_reservation_when_jobs_arrive(limit: int) -> None:
    """With the guard the schedule is the same as without it (the starved jobs were
    first in line anyway). A regression case: the kernel once followed the
    profile pass at 8 by an incremental pass at 10 that backfilled J5 against the
    profile's shadow time and the stale extra of the pass at 1, so J3 slipped
    from 12 to 18."""
    policy = Policy(order="fcfs", backfill="easy", starvation_limit_s=limit)
    run = run_kernel_detailed(STARVED_AT_8, 2, 1, "easy", policy=policy)
    assert run.start == [0, 8, 12, 14, 21]


def test_the_guard_rescues_a_long_job_from_a_stream_of_short_ones() -> None:
    """SJF, 1 core: L (100 s, submitted at 1) behind shorts (10 s) arriving every 10 s.

    Without the guard every short job passes L, which starts only after the last
    one (t=210). With a 30 s limit, L is promoted at the pass at 35 (34 s > 30)
    and starts when the running short job ends, at 40 (wait 39 <= 30 + 5 + 100).
    """
    jobs = [RefJob(1, 0, 1, 10, 10), RefJob(2, 1, 1, 100, 100)]
    jobs += [RefJob(3 + i, 5 + 10 * i, 1, 10, 10) for i in range(20)]
    starts = []
    for limit in (0, 30):
        policy = Policy(order="sjf", backfill="easy", starvation_limit_s=limit)
        starts.append(run_kernel_detailed(jobs, 1, 1, "easy", policy=policy).start[1])
    assert starts == [210, 40]


def test_several_starving_jobs_queue_up_behind_each_other() -> None:
    """Why the bound counts the starved jobs ahead: 1 core, limit 5, W = 10.

    X runs 0-10; A, B, C (10 s each) wait from t=1 and all starve at the pass at 10
    (gap 9). They run one after the other: C starts at 30, a wait of 29 > 5 + 9 + 10,
    but within 5 + 9 + (1 + 1) x 10 (B still starved ahead of it after the pass at 10).
    """
    jobs = [RefJob(1, 0, 1, 10, 10)] + [RefJob(2 + i, 1, 1, 10, 10) for i in range(3)]
    policy = Policy(order="sjf", backfill="easy", starvation_limit_s=5)
    assert run_kernel_detailed(jobs, 1, 1, "easy", policy=policy).start == [0, 10, 20, 30]
