"""The autoscaler, node lifecycle and cost, against hand-computed schedules.

The pool: 4 one-core nodes, min 1, max 4, a job counts as demand after
waiting 100 s, boot delay 50 s, idle nodes leave after 200 s, no cooldown,
at most 2 nodes per decision. Five one-core jobs A-E arrive at 0, each runs
1000 s (B and C 1000, D 1000, E 1000):

* 0: node 0 is up (the min); A starts on it; B-E wait.
* 100: B-E have waited 100 s: 4 nodes of demand, room for min(step 2, 4 - 1)
  = 2: nodes 1 and 2 boot (up at 150).
* 150: B and C start on nodes 1 and 2; D and E still need 2 nodes, room for
  1: node 3 boots (up at 200).
* 200: D starts on node 3; the pool is at its max.
* 1000: A ends, E starts on node 0.  1150: B and C end (nodes 1, 2 idle).
  1200: D ends (node 3 idle).  1350: nodes 2 and 1 leave.  1400: node 3
  leaves.  2000: E ends; node 0 stays (the min).

Provisioned seconds: node 0 2000, nodes 1 and 2 100..1350 = 1250 each,
node 3 150..1400 = 1250: 5750 node-seconds, 3 boots, 3 shutdowns.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from htcsim.cluster import Cluster, NodeType
from htcsim.kernel import KernelInputError
from htcsim.metrics import node_usage, summarize
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy, PolicyError, policy_from_mapping
from htcsim.schedule import time_series
from htcsim.sim import simulate

POOL = Policy(
    autoscale=True,
    autoscale_min_nodes=1,
    autoscale_max_nodes=4,
    autoscale_wait_s=100,
    autoscale_boot_delay_s=50,
    autoscale_idle_s=200,
    autoscale_cooldown_s=0,
    autoscale_step=2,
)


def workload_of(rows: list[dict[str, int]], nodes: int, cores: int = 1) -> Workload:
    """Jobs with ids 1..n from dicts of JOB_DTYPE fields, on ``nodes`` nodes."""
    jobs = empty_jobs(len(rows))
    for k, row in enumerate(rows):
        jobs[k]["job_id"] = k + 1
        jobs[k]["n_tasks"] = 1
        for name, value in row.items():
            jobs[k][name] = value
    return Workload(name="hand", jobs=jobs, machine=Machine(n_nodes=nodes, cores_per_node=cores))


def burst() -> Workload:
    return workload_of(
        [{"submit_s": 0, "walltime_s": 2000, "run_s": 1000} for _ in range(5)], nodes=4
    )


def test_burst_adds_the_nodes_the_policy_says_after_threshold_and_boot_delay() -> None:
    result = simulate(burst(), POOL)
    assert result.start_s.tolist() == [0, 150, 150, 200, 1000]
    assert result.end_s.tolist() == [1000, 1150, 1150, 1200, 2000]
    assert result.node_seconds.tolist() == [2000, 1250, 1250, 1250]
    assert result.counters["node_boots"] == 3
    assert result.counters["node_shutdowns"] == 3
    summary = summarize(result)
    assert summary["node_hours"] == pytest.approx(5750 / 3600)
    assert summary["provisioned_utilization"] == pytest.approx(5000 / 5750)


def test_nodes_by_state_over_time() -> None:
    series = time_series(simulate(burst(), POOL))
    at = {
        int(t): row for t, row in zip(series["time_s"], series.iter_rows(named=True), strict=True)
    }
    assert (at[0]["nodes_allocated"], at[0]["nodes_off"]) == (1, 3)
    assert (at[100]["nodes_booting"], at[100]["nodes_off"]) == (2, 1)
    assert (at[150]["nodes_allocated"], at[150]["nodes_booting"]) == (3, 1)
    assert at[200]["nodes_allocated"] == 4
    assert (at[1150]["nodes_idle"], at[1150]["nodes_allocated"]) == (2, 2)
    assert (at[1350]["nodes_off"], at[1350]["nodes_idle"]) == (2, 1)
    assert (at[1400]["nodes_off"], at[1400]["nodes_up"]) == (3, 1)
    assert series["node_hours"][-1] == pytest.approx(5750 / 3600)


def test_cooldown_spaces_the_actions() -> None:
    """Cooldown 120 s: after the boot at 100, node 3 waits until 220 (ready 270)."""
    result = simulate(burst(), replace(POOL, autoscale_cooldown_s=120))
    assert result.start_s.tolist() == [0, 150, 150, 270, 1000]
    assert result.counters["node_boots"] == 3


def test_a_decision_interval_takes_decisions_on_its_grid_only() -> None:
    """interval 60 s: the demand crosses its threshold at 100, the loop decides
    at 120 (boots nodes 1 and 2, up at 170); the pass at 170 starts B and C but
    takes no decision; the one at 180 boots node 3 (up at 230). Nodes 1 and 2
    are idle from 1170 (due 1370) and leave at 1380; node 3 idle from 1230
    leaves at 1440."""
    result = simulate(burst(), replace(POOL, autoscale_interval_s=60))
    assert result.start_s.tolist() == [0, 170, 170, 230, 1000]
    assert result.node_seconds.tolist() == [2000, 1260, 1260, 1260]


def test_pool_never_leaves_its_bounds_and_a_busy_node_never_leaves() -> None:
    """A long job pins node 0; a later burst grows the pool to its max of 3; the
    pool drains back to the min of 1 while the long job still runs."""
    rows = [{"submit_s": 0, "walltime_s": 9000, "run_s": 9000}]
    rows += [{"submit_s": 100, "walltime_s": 600, "run_s": 500} for _ in range(6)]
    policy = replace(POOL, autoscale_max_nodes=3)
    result = simulate(workload_of(rows, nodes=5), policy)
    series = time_series(result)
    assert series["nodes_up"].min() >= 1 and series["nodes_up"].max() <= 3
    assert len(result.node_seconds) == 3  # the pool is the max
    assert result.start_s[0] == 0 and result.end_s[0] == 9000
    assert series.filter(series["time_s"] >= 5000)["nodes_up"].to_list() == [1] * len(
        series.filter(series["time_s"] >= 5000)
    )
    assert (result.end_s >= 0).all()


def test_jobs_held_by_a_limit_are_not_demand() -> None:
    """One user, at most one running job: the other queued jobs wait with
    UserLimit, so no node is booted for them."""
    rows = [{"submit_s": 0, "walltime_s": 500, "run_s": 400, "user_id": 7} for _ in range(3)]
    policy = replace(POOL, max_running_jobs_per_user=1)
    result = simulate(workload_of(rows, nodes=4), policy)
    assert result.counters["node_boots"] == 0
    assert result.start_s.tolist() == [0, 400, 800]


def test_jobs_beyond_a_queued_jobs_cap_are_not_demand() -> None:
    """One user, at most one pending job considered: at 100 only B counts (C
    waits with UserLimit), so one node boots (B at 150); at 150 C is the one
    considered and gets its node (C at 200). Without the cap both would boot
    at 100."""
    rows = [{"submit_s": 0, "walltime_s": 500, "run_s": 400, "user_id": 7} for _ in range(3)]
    capped = simulate(workload_of(rows, nodes=4), replace(POOL, max_queued_jobs_per_user=1))
    assert capped.start_s.tolist() == [0, 150, 200]
    assert capped.counters["node_boots"] == 2
    free = simulate(workload_of(rows, nodes=4), POOL)
    assert free.start_s.tolist() == [0, 150, 150]


def test_demand_goes_to_the_first_type_a_task_fits_with_prices() -> None:
    """Two node types: small (1 core, 1/h), big (4 cores, 3/h). A 1-core job
    goes to small; a 4-core job can only use big."""
    cluster = Cluster(
        (
            NodeType("small", count=2, cores=1, price_per_hour=1.0),
            NodeType("big", count=2, cores=4, price_per_hour=3.0),
        )
    )
    rows = [
        {"submit_s": 0, "walltime_s": 3600, "run_s": 3600, "cores_per_task": 1},
        {"submit_s": 0, "walltime_s": 3600, "run_s": 3600, "cores_per_task": 4},
    ]
    policy = Policy(
        **{
            **POOL.to_dict(),
            "autoscale_min_nodes": 0,
            "autoscale_wait_s": 0,
            "autoscale_boot_delay_s": 0,
        }
    )
    result = simulate(workload_of(rows, nodes=1, cores=4), policy, cluster=cluster)
    assert result.start_s.tolist() == [0, 0]
    usage = node_usage(result)
    assert usage["node_hours"].to_list() == [1.0, 1.0]
    assert usage["cost"].to_list() == [1.0, 3.0]
    assert summarize(result)["cost"] == pytest.approx(4.0)


def test_fixed_fleet_cost_is_every_node_over_the_span() -> None:
    cluster = Cluster((NodeType("cpu", count=3, cores=1, price_per_hour=2.0),))
    rows = [
        {"submit_s": 0, "walltime_s": 3600, "run_s": 1800},
        {"submit_s": 1800, "walltime_s": 3600, "run_s": 1800},
    ]
    result = simulate(workload_of(rows, nodes=3), Policy(), cluster=cluster)
    assert result.node_seconds.tolist() == [3600, 3600, 3600]
    assert summarize(result)["cost"] == pytest.approx(3 * 2.0)


def test_policy_file_autoscale_section_and_errors() -> None:
    policy = policy_from_mapping(
        {
            "autoscale": {
                "enabled": True,
                "scale_up_wait_s": 60,
                "max": {"cpu": 240},
                "min": {"cpu": 2},
            },
            "failures": {"on_node_failure": "fail"},
        }
    )
    assert policy.autoscale_bounds("cpu", 10) == (2, 240)
    assert policy.autoscale_bounds("gpu", 8) == (0, 8)
    assert policy.on_node_failure == "fail"
    with pytest.raises(PolicyError, match=r"autoscale\.step"):
        policy_from_mapping({"autoscale": {"step": 0}})
    with pytest.raises(PolicyError, match=r"autoscale\.min"):
        policy_from_mapping({"autoscale": {"min": {"cpu": -1}}})
    with pytest.raises(PolicyError, match=r"failures\.on_node_failure"):
        policy_from_mapping({"failures": {"on_node_failure": "retry"}})
    with pytest.raises(PolicyError, match="above max"):
        Policy(autoscale=True, autoscale_node_min=(("cpu", 5.0),)).autoscale_bounds("cpu", 3)


def test_a_job_too_big_for_the_whole_pool_is_an_error() -> None:
    rows = [{"submit_s": 0, "walltime_s": 100, "run_s": 50, "n_tasks": 5}]
    with pytest.raises(KernelInputError):
        simulate(workload_of(rows, nodes=4), POOL)


def test_autoscaling_replay_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    rows = [
        {
            "submit_s": int(t),
            "walltime_s": 900,
            "run_s": int(r),
            "n_tasks": int(n),
        }
        for t, r, n in zip(
            np.sort(rng.integers(0, 20_000, 200)),
            rng.integers(1, 900, 200),
            rng.integers(1, 4, 200),
            strict=True,
        )
    ]
    workload = workload_of(rows, nodes=8)
    first, second = simulate(workload, POOL), simulate(workload, POOL)
    assert first.start_s.tolist() == second.start_s.tolist()
    assert first.node_seconds.tolist() == second.node_seconds.tolist()


def test_a_drained_node_takes_no_new_job_and_leaves_when_its_job_ends() -> None:
    """Two one-core nodes. A runs on node 0, which is drained at 10; B (submit
    20) must go to node 1 although node 0 is first; A ends at 100 and node 0
    goes off then, not before."""
    from htcsim.kernel import Kernel, NodeState, ReplayFeed, job_specs

    workload = workload_of(
        [
            {"submit_s": 0, "walltime_s": 200, "run_s": 100},
            {"submit_s": 20, "walltime_s": 200, "run_s": 100},
            {"submit_s": 150, "walltime_s": 200, "run_s": 10},
        ],
        nodes=2,
    )
    kernel = Kernel(np.tile([1, 0, 0, 0], (2, 1)), Policy())
    kernel.set_node_types(np.zeros(2, dtype=np.int32), np.array([1.0]))
    specs = job_specs(workload.jobs, with_memory=False)
    kernel.add_jobs(specs)
    kernel.start_clock(0)
    feed = ReplayFeed(kernel, specs["submit_s"], workload.jobs["run_s"])
    now = feed.step(0)
    assert kernel.drain_node(0, 10) == NodeState["DRAINING"]
    assert kernel.node_counts()["draining"] == 1
    while now >= 0:
        now = feed.step(now)
        if now == 150:
            assert kernel.node_states().tolist() == [NodeState["OFF"], NodeState["UP"]]
    assert kernel.job_allocation(1)[0].tolist() == []
    assert kernel.start_times().tolist() == [0, 20, 150]
    assert kernel.node_seconds(160).tolist() == [100, 160]


def test_autoscaling_with_seeded_failures_is_deterministic() -> None:
    from htcsim.sim.failures import failure_model

    rng = np.random.default_rng(5)
    rows = [
        {"submit_s": int(t), "walltime_s": 900, "run_s": int(r)}
        for t, r in zip(
            np.sort(rng.integers(0, 50_000, 300)), rng.integers(1, 900, 300), strict=True
        )
    ]
    workload = workload_of(rows, nodes=6)

    def run(seed: int) -> list[int]:
        failures = failure_model(4, 5_000.0, 300.0, 60_000, seed=seed)  # the pool: max 4
        result = simulate(workload, POOL, failures=failures, checkpoint_s=120)
        return [*result.start_s.tolist(), *result.node_seconds.tolist()]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_without_boot_delay_the_decisions_repeat_until_the_demand_is_served() -> None:
    """A 2-node job, step 1, no wait, no boot delay, no cooldown: two decisions
    at 0, one node each, and the job starts at 0 (not never)."""
    rows = [{"submit_s": 0, "walltime_s": 10, "run_s": 10, "n_tasks": 2}]
    policy = replace(
        POOL,
        autoscale_min_nodes=0,
        autoscale_max_nodes=2,
        autoscale_wait_s=0,
        autoscale_boot_delay_s=0,
        autoscale_cooldown_s=0,
        autoscale_step=1,
    )
    result = simulate(workload_of(rows, nodes=2), policy)
    assert result.start_s.tolist() == [0]
    assert result.counters["node_boots"] == 2


def test_live_boots_wait_for_the_node_to_join() -> None:
    """A live agent's booted node is BOOTING until its worker joins, whatever
    the boot delay; no wakeup is due for it meanwhile (the loop would spin)."""
    from htcsim.kernel import JOB_SPEC_DTYPE, JobState, Kernel, NodeState

    policy = replace(POOL, autoscale_min_nodes=0, autoscale_wait_s=10, autoscale_boot_delay_s=0)
    kernel = Kernel(np.array([[1, 0, 0, 0]] * 2, dtype=np.int64), policy)
    kernel.set_node_types(np.zeros(2, dtype=np.int32), np.zeros(1))
    kernel.configure_autoscale([(0, 2)], policy, 0, live=True)
    spec = np.zeros(1, dtype=JOB_SPEC_DTYPE)
    spec["job_id"], spec["walltime_s"], spec["n_tasks"] = 1, 100, 1
    spec["per_task"][0, 0] = 1
    slot = kernel.add_jobs(spec)
    kernel.submit(slot, 0)
    kernel.schedule(0)
    assert kernel.autoscale(0)[0].tolist() == []  # not waited long enough
    assert kernel.next_wakeup() == 10
    kernel.schedule(10)
    booted, stopped = kernel.autoscale(10)
    assert booted.tolist() == [0] and stopped.tolist() == []
    assert NodeState(int(kernel.node_states()[0])) == NodeState["BOOTING"]
    assert kernel.next_wakeup() == -1  # nothing to do until the node joins
    kernel.schedule(30)
    assert kernel.state_of(slot) == JobState["PENDING"]
    kernel.set_node_state(0, NodeState["UP"], 40)
    kernel.schedule(40)
    assert kernel.start_times()[slot] == 40
