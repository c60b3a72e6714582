"""Policy features through the simulator: SWF dependencies, explain, reservations.

The kernel tests drive slots by hand; these check that the driver maps a
workload onto them (job ids to slots, SWF fields 17/18 to dependencies, the
cluster file's reservations to dense owners) and that ``explain`` and the
command line report what the kernel computes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from htcsim.cli.app import app
from htcsim.cluster import Cluster, load_cluster
from htcsim.kernel import Kernel, KernelInputError, ReplayFeed, dense_ids, job_specs
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy, QoS
from htcsim.segments import REQUEUED
from htcsim.sim import explain, simulate
from htcsim.workload.loader import load_workload

runner = CliRunner()


def workload_of(rows: list[dict[str, int]], cores: int) -> Workload:
    """Jobs with ids 1..n from dicts of JOB_DTYPE fields, on ``cores`` one-core nodes."""
    jobs = empty_jobs(len(rows))
    for k, row in enumerate(rows):
        jobs[k]["job_id"] = k + 1
        jobs[k]["n_tasks"] = 1
        for name, value in row.items():
            jobs[k][name] = value
    return Workload(name="hand", jobs=jobs, machine=Machine(n_nodes=cores, cores_per_node=1))


# ---------------------------------------------------------- SWF dependencies


def test_swf_preceding_job_and_think_time_become_a_dependency() -> None:
    """4 cores, all idle. Job 1 runs 0..50. Job 2 (submitted at 10) follows job 1
    with 30 s of think time: it starts at 50 + 30 = 80 although cores were free
    all along. Job 3 follows job 1 with an unknown think time (-1): at 50. Job 4
    follows job 2 (think 5): 80 + 10 (its run) + 5 = 95."""
    workload = workload_of(
        [
            {"submit_s": 0, "walltime_s": 100, "run_s": 50},
            {
                "submit_s": 10,
                "walltime_s": 100,
                "run_s": 10,
                "preceding_job_id": 1,
                "think_time_s": 30,
            },
            {"submit_s": 20, "walltime_s": 100, "run_s": 10, "preceding_job_id": 1},
            {
                "submit_s": 30,
                "walltime_s": 100,
                "run_s": 10,
                "preceding_job_id": 2,
                "think_time_s": 5,
            },
        ],
        cores=4,
    )
    result = simulate(workload, Policy())
    assert result.start_s.tolist() == [0, 80, 50, 95]
    assert result.end_s.tolist() == [50, 90, 60, 105]
    assert result.cancelled is not None and not result.cancelled.any()


def test_a_preceding_job_submitted_later_still_comes_first() -> None:
    """SWF logs are sorted by submit time, not by dependency: job 1 follows job 2,
    which is submitted later (at 40) and runs 40..60; job 1 starts at 60 + 10."""
    workload = workload_of(
        [
            {
                "submit_s": 0,
                "walltime_s": 50,
                "run_s": 5,
                "preceding_job_id": 2,
                "think_time_s": 10,
            },
            {"submit_s": 40, "walltime_s": 50, "run_s": 20},
        ],
        cores=2,
    )
    assert simulate(workload, Policy()).start_s.tolist() == [70, 40]


def test_an_unknown_preceding_job_is_rejected_naming_the_job() -> None:
    workload = workload_of(
        [
            {"submit_s": 0, "walltime_s": 10, "run_s": 10},
            {"submit_s": 5, "walltime_s": 10, "run_s": 10, "preceding_job_id": 99},
        ],
        cores=1,
    )
    with pytest.raises(
        KernelInputError, match="job 2 follows job 99, which is not in the workload"
    ):
        simulate(workload, Policy())


# ------------------------------------------------------------------- explain
#
# 2 one-core nodes. X (user 1) takes both 0..1000. A (user 2, 1 core) arrives at
# 100. Policy: multifactor, age weight 1000 over 1000 s, size 100 (favor small:
# 1 - 1/2 = 0.5), fairshare 10. The only recomputation before 1000 is at 0
# (no usage: factor 1).
#   At 500: age 400/1000 = 0.4 -> 400 + 50 + 10 = 460; pending, first in line.
#   At 1000 (the pass that starts A): X has used 2 x 1000 core-seconds; both
#   users in the implicit group (S = 1/2): user 2's U_eff = 0 + (1 - 0) x 1/2
#   -> 2^-1 = 0.5; age 900/1000 -> 900 + 50 + 5 = 955.

EXPLAIN_POLICY = Policy(
    order="multifactor",
    priority_weight_age=1000.0,
    priority_max_age_s=1000,
    priority_weight_size=100.0,
    priority_weight_fairshare=10.0,
)


def explain_workload() -> Workload:
    return workload_of(
        [
            {"submit_s": 0, "n_tasks": 2, "walltime_s": 1000, "run_s": 1000, "user_id": 1},
            {"submit_s": 100, "walltime_s": 100, "run_s": 100, "user_id": 2},
        ],
        cores=2,
    )


def kernel_factors(workload: Workload, policy: Policy, slot: int, at: int) -> tuple[float, dict]:
    """The same replay driven directly through the kernel, up to the pass at ``at``."""
    jobs = workload.jobs
    kernel = Kernel(np.array([[1, 0, 0, 0]] * workload.machine.n_nodes), policy)
    kernel.add_jobs(job_specs(jobs, policy=policy))
    kernel.set_accounts(dense_ids(jobs["user_id"])[1], dense_ids(jobs["group_id"])[1])
    feed = ReplayFeed(kernel, jobs["submit_s"], np.minimum(jobs["run_s"], jobs["walltime_s"]))
    now = feed.next_time()
    while 0 <= now <= at:
        now = feed.step(now)
    return kernel.priority_factors(slot, at)


def test_explain_while_pending_matches_the_hand_computation_and_the_kernel() -> None:
    why = explain(explain_workload(), EXPLAIN_POLICY, job_id=2, at_s=500)
    assert (why.job_id, why.at_s, why.state, why.reason) == (2, 500, "pending", "Resources")
    assert why.queue_position == 0
    assert why.factors == pytest.approx(
        {"age": 0.4, "size": 0.5, "fairshare": 1.0, "qos": 0.0, "nice": 0.0}
    )
    assert why.weighted == pytest.approx(
        {"age": 400.0, "size": 50.0, "fairshare": 10.0, "qos": 0.0, "nice": 0.0}
    )
    assert why.priority == pytest.approx(460.0) == pytest.approx(sum(why.weighted.values()))
    priority, factors = kernel_factors(explain_workload(), EXPLAIN_POLICY, 1, 500)
    assert why.priority == priority
    assert why.factors == factors


def test_explain_defaults_to_the_pass_that_starts_the_job() -> None:
    why = explain(explain_workload(), EXPLAIN_POLICY, job_id=2)
    assert (why.at_s, why.state, why.reason, why.queue_position) == (
        1000,
        "running",
        "NotPending",
        None,
    )
    assert why.factors == pytest.approx(
        {"age": 0.9, "size": 0.5, "fairshare": 0.5, "qos": 0.0, "nice": 0.0}
    )
    assert why.priority == pytest.approx(955.0)
    assert (why.priority, why.factors) == kernel_factors(
        explain_workload(), EXPLAIN_POLICY, 1, 1000
    )


def test_explain_an_unknown_job_names_it() -> None:
    with pytest.raises(KernelInputError, match="job 7 is not in the workload hand"):
        explain(explain_workload(), EXPLAIN_POLICY, job_id=7)


def test_the_command_line_prints_the_factor_table() -> None:
    """The embedded workload's 300th job under multifactor: the table shows the
    same values as ``explain`` on the same 500 jobs."""
    workload = load_workload(None, max_jobs=500)
    job_id = int(workload.jobs["job_id"][299])
    why = explain(workload, Policy(order="multifactor"), job_id)
    result = runner.invoke(
        app, ["simulate", "--order", "multifactor", "--max-jobs", "500", "--explain", str(job_id)]
    )
    assert result.exit_code == 0, result.output
    assert f"job {job_id} at t={why.at_s} s: {why.state} (reason {why.reason}" in result.output
    rows = {
        match[0]: (match[1], match[2])
        for match in re.findall(r"(\w+)\s*│\s*([\d.]+)\s*│\s*([+-][\d.]+)", result.output)
    }
    assert set(rows) == {"age", "size", "fairshare", "qos", "nice"}
    for name, value in why.factors.items():
        assert rows[name] == (f"{value:.4f}", f"{why.weighted[name]:+.2f}")
    assert f"{why.priority:.2f}" in result.output


def test_the_command_line_names_an_unknown_job() -> None:
    result = runner.invoke(
        app, ["simulate", "--order", "multifactor", "--max-jobs", "500", "--explain", "987654"]
    )
    assert result.exit_code == 2
    assert "job 987654 is not in the workload" in result.output


# ------------------------------------------------- explain: the replay simulate runs
#
# One one-core node. A (submit 0, run 100), B (submit 10, run 50). The node
# fails at 50 for 1000 s: A is requeued (eligible again at 50) and restarts at
# the repair, 1050-1150; B runs 1150-1200. Without the failure A ends at 100
# and B runs 100-150.


def failing_workload() -> tuple[Workload, np.ndarray]:
    from htcsim.sim.failures import FAILURE_DTYPE

    workload = workload_of(
        [
            {"submit_s": 0, "walltime_s": 1000, "run_s": 100},
            {"submit_s": 10, "walltime_s": 1000, "run_s": 50},
        ],
        cores=1,
    )
    return workload, np.array([(50, 0, 1000)], dtype=FAILURE_DTYPE)


def test_explain_replays_the_failures_simulate_replays() -> None:
    workload, failures = failing_workload()
    assert explain(workload, Policy(), 1, 500).state == "ended"  # (no failure)
    why = explain(workload, Policy(), 1, 500, failures=failures)
    assert (why.state, why.reason, why.queue_position) == ("pending", "NodeDown", 0)
    # age counts from the requeue at 50, over the default max age of 7 days
    assert why.factors["age"] == pytest.approx(450 / 604_800)
    assert explain(workload, Policy(), 2).at_s == 100
    started = explain(workload, Policy(), 2, failures=failures)
    assert (started.at_s, started.state) == (1150, "running")
    assert simulate(workload, Policy(), failures=failures).start_s.tolist() == [1050, 1150]


def test_explain_follows_simulate_with_failures_checkpoints_and_the_autoscaler() -> None:
    """For jobs the failures requeued: explain stops at the pass that first
    started each (simulate's first start), and at the end of a cut segment
    finds the job pending again, or running already when its next segment
    starts at once, as simulate's segments say."""
    from dataclasses import replace

    from htcsim.sim.failures import failure_model

    workload = load_workload(None, max_jobs=1500)
    policy = replace(
        Policy(order="multifactor"),
        autoscale=True,
        autoscale_max_nodes=workload.machine.n_nodes,
        autoscale_wait_s=60,
        autoscale_boot_delay_s=60,
    )
    first = int(workload.jobs["submit_s"][0])
    failures = failure_model(
        workload.machine.n_nodes, 200 * 3600.0, 3600.0, 30 * 86_400, seed=2, start_s=first
    )
    result = simulate(workload, policy, failures=failures, checkpoint_s=1800)
    runs = result.run_segments()
    cut = np.flatnonzero(runs.outcome == REQUEUED)
    restarted_later = cut[runs.start_s[cut + 1] > runs.end_s[cut]]
    restarted_at_once = cut[runs.start_s[cut + 1] == runs.end_s[cut]]
    assert len(restarted_later) >= 3 and len(restarted_at_once) >= 1
    for k, state in [
        *((k, "pending") for k in restarted_later[:3]),
        (restarted_at_once[0], "running"),
    ]:
        slot = int(runs.job_idx[k])
        job_id = int(workload.jobs["job_id"][slot])
        started = explain(workload, policy, job_id, failures=failures, checkpoint_s=1800)
        assert (started.at_s, started.state) == (int(result.first_start_s[slot]), "running")
        then = explain(
            workload, policy, job_id, int(runs.end_s[k]), failures=failures, checkpoint_s=1800
        )
        assert then.state == state, (job_id, then)


def test_explain_gives_the_priority_the_kernel_ordered_the_queue_by() -> None:
    """At 500 the factors give 460, but the queue is ordered by A's priority as
    computed at its arrival (100: age 0): 0 + 50 + 10 = 60, the kernel's stored
    value. At the pass that starts A (1000, a recomputation) both views agree."""
    why = explain(explain_workload(), EXPLAIN_POLICY, job_id=2, at_s=500)
    assert why.priority == pytest.approx(460.0)
    assert why.ordered is not None
    assert why.ordered.at_s == 100
    assert why.ordered.factors == pytest.approx(
        {"age": 0.0, "size": 0.5, "fairshare": 1.0, "qos": 0.0, "nice": 0.0}
    )
    assert why.ordered.priority == pytest.approx(60.0) == stored_priority(500, slot=1)
    at_start = explain(explain_workload(), EXPLAIN_POLICY, job_id=2)
    assert at_start.ordered is not None
    assert (at_start.ordered.at_s, at_start.ordered.priority) == (1000, at_start.priority)
    assert explain(explain_workload(), Policy(), job_id=2, at_s=500).ordered is None  # fcfs


def stored_priority(at: int, slot: int) -> float:
    """The priority the kernel holds for ``slot`` after the steps up to ``at``."""
    workload, policy = explain_workload(), EXPLAIN_POLICY
    jobs = workload.jobs
    kernel = Kernel(np.array([[1, 0, 0, 0]] * workload.machine.n_nodes), policy)
    kernel.add_jobs(job_specs(jobs, policy=policy))
    kernel.set_accounts(dense_ids(jobs["user_id"])[1], dense_ids(jobs["group_id"])[1])
    feed = ReplayFeed(kernel, jobs["submit_s"], np.minimum(jobs["run_s"], jobs["walltime_s"]))
    now = feed.next_time()
    while 0 <= now <= at:
        now = feed.step(now)
    return float(kernel.priorities()[slot])


def swf_log(workload: Workload, path: Path) -> Path:
    """The hand workload as an SWF log (recorded wait 0) the command line reads."""
    from htcsim.workload.swf_writer import write_swf

    jobs = workload.jobs
    write_swf(
        path, jobs, jobs["submit_s"], jobs["submit_s"] + jobs["run_s"], machine=workload.machine
    )
    return path


def test_the_command_line_explains_with_the_failure_trace(tmp_path: Path) -> None:
    workload, _ = failing_workload()
    log = swf_log(workload, tmp_path / "hand.swf")
    trace = tmp_path / "failures.csv"
    trace.write_text("time_s,node,duration_s\n50,0,1000\n")
    args = ["simulate", str(log), "--explain", "1", "--at", "500"]
    assert "job 1 at t=500 s: ended" in runner.invoke(app, args).output
    result = runner.invoke(app, [*args, "--failures", str(trace)])
    assert result.exit_code == 0, result.output
    assert "job 1 at t=500 s: pending (reason NodeDown, #1 in the queue)" in result.output


def test_the_command_line_prints_both_views_of_the_priority(tmp_path: Path) -> None:
    from htcsim.policy import save_policy

    log = swf_log(explain_workload(), tmp_path / "hand.swf")
    policy = tmp_path / "multifactor.toml"
    save_policy(EXPLAIN_POLICY, policy)
    result = runner.invoke(
        app, ["simulate", str(log), "--policy", str(policy), "--explain", "2", "--at", "500"]
    )
    assert result.exit_code == 0, result.output
    assert "ordered by, t=100" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ age"))
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "age",
        "0.4000",
        "+400.00",
        "0.0000",
        "+0.00",
    ]
    total = next(line for line in result.output.splitlines() if "priority" in line and "│" in line)
    assert "460.00" in total and "60.00" in total


# ---------------------------------------------------- reservations from a file
#
# 3 one-core nodes of type "cpu"; the first 2 reserved over [100, 300) for user
# 17 (a workload id) or for the QoS "campaign" (queue 4).

RESERVED_CLUSTER = """
[[node_type]]
name = "cpu"
count = 3
cores = 1

[[reservation]]
name = "campaign"
start_s = 100
end_s = 300
node_type = "cpu"
count = 2
{owner}
"""
CAMPAIGN = Policy(qos=(QoS("campaign", queues=(4,)),))


def reserved_cluster(tmp_path: Path, owner: str) -> Cluster:
    path = tmp_path / "cluster.toml"
    path.write_text(RESERVED_CLUSTER.format(owner=owner))
    return load_cluster(path)


@pytest.mark.parametrize("owner", ["user = 17", "qos = 'campaign'"])
def test_a_reservation_from_the_cluster_file_is_kept_for_its_owner(
    tmp_path: Path, owner: str
) -> None:
    """A (user 5, 3 cores, 100 s) at 0 ends when the window opens: it may use the
    reserved nodes. B (user 17, queue 4: the owner; 2 cores, 100 s) at 100 runs in
    the window at once. C (user 5, 1 core) at 100 gets the unreserved node. Were
    the owner mapped to the wrong dense index, B would be a stranger that may not
    touch nodes 0 and 1 and would wait."""
    workload = workload_of(
        [
            {"submit_s": 0, "n_tasks": 3, "walltime_s": 100, "run_s": 100, "user_id": 5},
            {
                "submit_s": 100,
                "n_tasks": 2,
                "walltime_s": 100,
                "run_s": 100,
                "user_id": 17,
                "queue_id": 4,
            },
            {"submit_s": 100, "walltime_s": 500, "run_s": 500, "user_id": 5},
        ],
        cores=3,
    )
    result = simulate(workload, CAMPAIGN, cluster=reserved_cluster(tmp_path, owner))
    assert result.start_s.tolist() == [0, 100, 100]


def test_a_job_waiting_for_the_window_to_end_starts_at_its_end(tmp_path: Path) -> None:
    """D (user 5, 3 cores, 150 s) at 0 would overlap the window on nodes 0 and 1:
    it must wait until the window ends at 300 (user 17's job runs 100..200)."""
    workload = workload_of(
        [
            {"submit_s": 0, "n_tasks": 3, "walltime_s": 150, "run_s": 150, "user_id": 5},
            {"submit_s": 100, "n_tasks": 2, "walltime_s": 100, "run_s": 100, "user_id": 17},
        ],
        cores=3,
    )
    result = simulate(workload, CAMPAIGN, cluster=reserved_cluster(tmp_path, "user = 17"))
    assert result.start_s.tolist() == [300, 100]


def test_a_reservation_for_a_qos_the_policy_lacks_is_named(tmp_path: Path) -> None:
    workload = workload_of([{"submit_s": 0, "walltime_s": 10, "run_s": 10}], cores=3)
    cluster = reserved_cluster(tmp_path, "qos = 'nightly'")
    with pytest.raises(KernelInputError, match="reservation 'campaign': qos 'nightly'"):
        simulate(workload, Policy(), cluster=cluster)
