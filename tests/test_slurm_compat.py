"""The Slurm compatibility profile (``[slurm_compat]``): each rule on a schedule
worked out by hand, and the profile's neutral settings against the plain replay."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htcsim.kernel import JOB_SPEC_DTYPE, Kernel, KernelInputError, ReplayFeed, node_capacity
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy, PolicyError, inert_fields, policy_from_mapping
from htcsim.sim import simulate


def workload_of(rows: list[tuple[int, int, int, int]], cores: int) -> Workload:
    """Jobs from (submit, cores, walltime, run) rows on ``cores`` one-core nodes."""
    jobs = empty_jobs(len(rows))
    for k, (submit, size, wall, run) in enumerate(rows):
        jobs[k]["job_id"] = k + 1
        jobs[k]["submit_s"] = submit
        jobs[k]["n_tasks"] = size
        jobs[k]["walltime_s"] = wall
        jobs[k]["run_s"] = run
    return Workload(name="hand", jobs=jobs, machine=Machine(n_nodes=cores, cores_per_node=1))


def test_reaction_time_delays_what_each_event_allows() -> None:
    """One core, FIFO, no backfill, reaction_s = 1. A (0, runs 10), B (5, runs
    10), C (12, runs 5).

    Plain: A 0-10, B 10-20, C 20-25.
    Profile: A is seen at 1 and starts then (ends 11). B is seen at 6: no
    core. A's end is seen at 12: B starts at 12 (ends 22). C, seen at 13,
    waits for B's end, seen at 23. End times stay the real ones.
    """
    workload = workload_of([(0, 1, 60, 10), (5, 1, 60, 10), (12, 1, 60, 5)], cores=1)
    plain = Policy(backfill="none")
    assert simulate(workload, plain).start_s.tolist() == [0, 10, 20]
    result = simulate(workload, replace(plain, slurm_reaction_s=1))
    assert result.start_s.tolist() == [1, 12, 23]
    assert result.end_s.tolist() == [11, 22, 28]


def test_a_pass_for_one_event_does_not_serve_a_later_one_sooner() -> None:
    """Two one-core nodes, reaction_s = 2. A arrives at 0, B at 1 (both fit).
    A is seen at 2 and starts; the pass at 2 does not see B yet (B arrived 1 s
    before it): B starts at 3, 2 s after its own arrival."""
    workload = workload_of([(0, 1, 60, 10), (1, 1, 60, 10)], cores=2)
    result = simulate(workload, Policy(backfill="none", slurm_reaction_s=2))
    assert result.start_s.tolist() == [2, 3]


def test_backfill_only_at_multiples_of_the_interval() -> None:
    """Two one-core nodes, EASY, backfill_interval_s = 30, no reaction time.
    A (0, 1 core, limit 100, runs 100), B (1, 2 cores, runs 50), C (2, 1 core,
    limit 50, runs 20).

    Plain: A starts at 0; B waits for A's end (100); C fits now and ends by
    52 <= 100, so it is backfilled at 2.
    Profile: the passes at 1 and 2 start jobs in strict order, and B blocks C;
    the backfill cycle at 30 starts C (30 + 50 = 80 <= 100). B starts at 100.
    """
    rows = [(0, 1, 100, 100), (1, 2, 100, 50), (2, 1, 50, 20)]
    workload = workload_of(rows, cores=2)
    plain = Policy(backfill="easy")
    assert simulate(workload, plain).start_s.tolist() == [0, 100, 2]
    profile = replace(plain, slurm_backfill_interval_s=30)
    assert simulate(workload, profile).start_s.tolist() == [0, 100, 30]
    # conservative backfilling waits for the cycle too
    conservative = replace(profile, backfill="conservative")
    assert simulate(workload, conservative).start_s.tolist() == [0, 100, 30]


def test_backfill_interval_and_reaction_together() -> None:
    """The same three jobs with reaction_s = 1 as well: A is seen at 1 and
    starts (strict order: it is first); B and C are seen at 2 and 3; the cycle
    at 30 starts C; A ends at 101, seen at 102, when B starts."""
    rows = [(0, 1, 100, 100), (1, 2, 100, 50), (2, 1, 50, 20)]
    policy = Policy(backfill="easy", slurm_backfill_interval_s=30, slurm_reaction_s=1)
    assert simulate(workload_of(rows, cores=2), policy).start_s.tolist() == [1, 102, 30]


def test_time_limits_are_whole_minutes() -> None:
    """One core. A asks 61 s and would run 200 s, B arrives with it. Plain: A
    is killed at 61, B starts then. Whole minutes: A's limit is 120 s."""
    workload = workload_of([(0, 1, 61, 200), (0, 1, 60, 10)], cores=1)
    assert simulate(workload, Policy()).start_s.tolist() == [0, 61]
    result = simulate(workload, Policy(slurm_whole_minute_limits=True))
    assert result.start_s.tolist() == [0, 120]
    assert workload.jobs["walltime_s"].tolist() == [61, 60]  # the workload is left as it was


def test_best_fit_takes_the_tightest_node_ties_in_node_order() -> None:
    """Nodes of 4, 4, 2 and 2 cores, all idle (as the validation harness's):
    Slurm put a 2-core job on the first 2-core node and a 3-core job on the
    first 4-core node. best_fit does the same: the 2-core job leaves 0 free on
    node 2 or 3 (tie: node 2); then the 3-core job fits only nodes 0 and 1,
    each left with 1 free (tie: node 0); a 1-core job then goes where 1 core
    is free, node 0 (left 0), not the idle node 1 nor node 3."""
    capacity = np.concatenate([node_capacity(2, 4), node_capacity(2, 2)])
    kernel = Kernel(capacity, Policy(placement="best_fit"))
    specs = np.zeros(3, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = [1, 2, 3]
    specs["walltime_s"] = 100
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = [2, 3, 1]
    specs["user_idx"] = specs["group_idx"] = specs["qos_idx"] = -1
    kernel.add_jobs(specs)
    feed = ReplayFeed(kernel, specs["submit_s"], np.full(3, 100, dtype=np.int64))
    feed.step(0)
    assert [kernel.job_allocation(j)[0].tolist() for j in range(3)] == [[2], [0], [0]]


def _allocations(capacity: np.ndarray, placement: str, busy: list[int], job: int) -> list[int]:
    """The nodes of one pass's starts: a job of ``busy[n]`` cores for each
    nonzero entry (in order), then a ``job``-core job."""
    kernel = Kernel(capacity, Policy(placement=placement))  # type: ignore[arg-type]
    cores = [c for c in busy if c] + [job]
    specs = np.zeros(len(cores), dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = np.arange(1, len(cores) + 1)
    specs["walltime_s"] = 100
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = cores
    specs["user_idx"] = specs["group_idx"] = specs["qos_idx"] = -1
    kernel.add_jobs(specs)
    feed = ReplayFeed(kernel, specs["submit_s"], np.full(len(cores), 100, dtype=np.int64))
    feed.step(0)
    return [int(kernel.job_allocation(j)[0][0]) for j in range(len(cores))]


def test_cons_tres_takes_the_tightest_run_of_nodes_then_its_tightest_node() -> None:
    """Slurm's cons_tres (equal weights, no topology): nodes able to take the
    job form runs of consecutive nodes; the run that holds the job with the
    fewest free cores in all is chosen, and in it the node with the fewest
    free cores that holds the job.

    Nodes of 3, 4, 2 and 2 cores; a 4-core job fills node 1 first (only node
    1 holds it). A 2-core job: nodes 0, 2 and 3 can take it, node 1 (full)
    splits them into the runs {0} (3 free) and {2, 3} (4 free): the run {0}
    is the tighter, so node 0, though nodes 2 and 3 have fewer free cores.
    best_fit takes node 2 (2 free, left with 0).
    """
    capacity = np.concatenate([node_capacity(1, 3), node_capacity(1, 4), node_capacity(2, 2)])
    assert _allocations(capacity, "cons_tres", [0, 4, 0, 0], 2) == [1, 0]
    assert _allocations(capacity, "best_fit", [0, 4, 0, 0], 2) == [1, 2]


def test_cons_tres_with_every_node_idle_is_the_tightest_node() -> None:
    """Nodes of 4, 4, 2 and 2 cores, all idle (one run): a 2-core job goes to
    node 2, the first node of 2 cores; a 3-core job then to node 0 (the 2-core
    nodes cannot take it: the run is {0, 1}), as Slurm placed them."""
    capacity = np.concatenate([node_capacity(2, 4), node_capacity(2, 2)])
    assert _allocations(capacity, "cons_tres", [0, 0, 0, 0], 2) == [2]
    kernel = Kernel(capacity, Policy(placement="cons_tres"))
    specs = np.zeros(2, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = [1, 2]
    specs["walltime_s"] = 100
    specs["n_tasks"] = 1
    specs["per_task"][:, 0] = [2, 3]
    specs["user_idx"] = specs["group_idx"] = specs["qos_idx"] = -1
    kernel.add_jobs(specs)
    ReplayFeed(kernel, specs["submit_s"], np.full(2, 100, dtype=np.int64)).step(0)
    assert [kernel.job_allocation(j)[0].tolist() for j in range(2)] == [[2], [0]]


def test_cons_tres_spreads_a_job_no_node_holds_over_its_run_in_order() -> None:
    """Six one-task-per-core tasks on nodes of 4, 4, 2 and 2 cores, all idle:
    no node holds them, so the run's nodes are taken in order: 4 on node 0,
    2 on node 1."""
    capacity = np.concatenate([node_capacity(2, 4), node_capacity(2, 2)])
    kernel = Kernel(capacity, Policy(placement="cons_tres"))
    specs = np.zeros(1, dtype=JOB_SPEC_DTYPE)
    specs["job_id"] = 1
    specs["walltime_s"] = 100
    specs["n_tasks"] = 6
    specs["per_task"][:, 0] = 1
    specs["user_idx"] = specs["group_idx"] = specs["qos_idx"] = -1
    kernel.add_jobs(specs)
    ReplayFeed(kernel, specs["submit_s"], np.array([100], dtype=np.int64)).step(0)
    nodes, tasks = kernel.job_allocation(0)
    assert (nodes.tolist(), tasks.tolist()) == ([0, 1], [4, 2])


def test_priorities_recomputed_on_slurms_clock() -> None:
    """One core, multifactor on fairshare alone (equal shares), priorities
    recomputed every 60 s. A (user 1, 0, runs 40), B (user 1, 1, runs 10),
    C (user 2, 2, runs 10).

    Plain: the pass at 0 computes the factors (no usage: equal), the next
    recomputation is due at 60. B and C tie; B, submitted first, starts at A's
    end (40), C at 50.
    Phase 30 (Slurm's clock ticks at 30, 90, ...): the first pass at or after
    30 is the one at A's end, 40; it charges A's 40 core-seconds to user 1,
    so C (user 2, no usage) starts at 40 and B at 50.
    Phase 45: the pass at 40 comes before the tick; B starts at 40 as in the
    plain replay, and the pass at 50 (after the tick) starts C.
    """
    workload = workload_of([(0, 1, 100, 40), (1, 1, 100, 10), (2, 1, 100, 10)], cores=1)
    jobs = workload.jobs
    jobs["user_id"] = [1, 1, 2]
    workload = replace(workload, jobs=jobs)
    plain = Policy(
        order="multifactor",
        backfill="none",
        priority_weight_age=0.0,
        priority_weight_fairshare=1000.0,
        priority_interval_s=60,
        user_shares=(("1", 1.0), ("2", 1.0)),
    )
    assert simulate(workload, plain).start_s.tolist() == [0, 40, 50]
    at_30 = simulate(workload, replace(plain, slurm_priority_phase_s=30))
    assert at_30.start_s.tolist() == [0, 50, 40]
    at_45 = simulate(workload, replace(plain, slurm_priority_phase_s=45))
    assert at_45.start_s.tolist() == [0, 40, 50]


def test_the_priority_phase_is_checked() -> None:
    policy = policy_from_mapping(
        {"priority": {"interval_s": 60}, "slurm_compat": {"priority_phase_s": 59}}
    )
    assert policy.slurm_priority_phase_s == 59 and policy.slurm_compat_on
    for bad in (60, -2, 1.5):
        with pytest.raises(PolicyError, match=r"priority_phase_s must be -1 \(off\) or"):
            policy_from_mapping(
                {"priority": {"interval_s": 60}, "slurm_compat": {"priority_phase_s": bad}}
            )
    assert "slurm_priority_phase_s" in inert_fields(replace(policy, order="fcfs"))
    kernel = Kernel(node_capacity(1, 1), replace(policy, order="multifactor"))
    with pytest.raises(KernelInputError, match="phase_s must be -1 or in"):
        kernel.set_priority_phase(60)


def test_profile_keys_read_and_checked() -> None:
    policy = policy_from_mapping(
        {"slurm_compat": {"reaction_s": 1, "backfill_interval_s": 30, "whole_minute_limits": True}}
    )
    assert (policy.slurm_reaction_s, policy.slurm_backfill_interval_s) == (1, 30)
    assert policy.slurm_whole_minute_limits and policy.slurm_compat_on
    assert not Policy().slurm_compat_on
    with pytest.raises(PolicyError, match=r"slurm_compat\.reaction_s must be an integer >= 0"):
        policy_from_mapping({"slurm_compat": {"reaction_s": -1}})
    with pytest.raises(PolicyError, match="whole_minute_limits must be true or false"):
        policy_from_mapping({"slurm_compat": {"whole_minute_limits": 1}})
    assert "slurm_backfill_interval_s" in inert_fields(replace(policy, backfill="none"))


def test_the_feed_refuses_a_negative_setting() -> None:
    kernel = Kernel(node_capacity(1, 1), Policy())
    feed = ReplayFeed(kernel, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
    with pytest.raises(KernelInputError, match="must be >= 0"):
        feed.set_slurm_compat(-1, 0)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    n = draw(st.integers(1, 25))
    cores = draw(st.integers(1, 6))
    rows = []
    submit = 0
    for _ in range(n):
        submit += draw(st.sampled_from([0, 0, 1, 2, 7, 31, 60]))
        wall = draw(st.integers(1, 90))
        run = draw(st.one_of(st.integers(0, wall), st.integers(wall, wall + 30)))
        rows.append((submit, draw(st.integers(1, cores)), wall, run))
    return workload_of(rows, cores)


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(workloads(), st.sampled_from(("easy", "conservative")), st.sampled_from(("fcfs", "sjf")))
def test_a_backfill_cycle_every_second_is_the_plain_replay(
    workload: Workload, mode: str, order: str
) -> None:
    """Every event falls on a whole second, so with backfill_interval_s = 1 and
    no reaction time every pass is a backfill cycle: the timed path of the feed
    gives the plain schedule."""
    plain = Policy(backfill=mode, order=order)  # type: ignore[arg-type]
    expected = simulate(workload, plain).start_s.tolist()
    assert simulate(workload, replace(plain, slurm_backfill_interval_s=1)).start_s.tolist() == (
        expected
    )


@SETTINGS
@given(workloads(), st.integers(1, 40))
def test_without_backfill_the_interval_changes_nothing(workload: Workload, interval: int) -> None:
    plain = Policy(backfill="none")
    expected = simulate(workload, plain).start_s.tolist()
    profile = replace(plain, slurm_backfill_interval_s=interval)
    assert simulate(workload, profile).start_s.tolist() == expected


@SETTINGS
@given(workloads(), st.integers(1, 5))
def test_reaction_time_keeps_fifo_order_and_never_starts_before_submit(
    workload: Workload, reaction: int
) -> None:
    """FIFO without backfill starts jobs in queue order whatever the timing;
    with a reaction time no job starts sooner than that after its arrival."""
    plain = simulate(workload, Policy(backfill="none"))
    timed = simulate(workload, Policy(backfill="none", slurm_reaction_s=reaction))
    submit = workload.jobs["submit_s"]
    start = timed.start_s
    assert (start >= submit + reaction).all()
    key = np.lexsort((workload.jobs["job_id"], submit))
    assert (np.diff(start[key]) >= 0).all()
    assert (np.diff(plain.start_s[key]) >= 0).all()
    # the very first job is served by the pass reaction_s after its arrival
    assert start[key[0]] == submit[key[0]] + reaction
