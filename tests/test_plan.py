"""Capacity planning: hand-checkable fleets, the search against brute force, growth, the CLI.

The hand case: n one-node jobs of 100 s, all submitted at 0, on a machine of
one-core nodes. With f nodes, job k (in order) starts at 100 * (k // f), so
the waits, and their 95th percentile, are known in closed form; the waits
only shrink as f grows, so the smallest fleet for a target is known exactly.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from htcsim.cluster import Cluster, NodeType
from htcsim.metrics import summarize
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.plan.defaults import DEFAULT_GRID
from htcsim.plan.fleet import (
    PlanStep,
    _fleet_policy,
    _Point,
    _smallest_meeting,
    min_fleet,
    plan_fleet,
    scale_arrivals,
    with_fleet,
)
from htcsim.plan.plot import plot_plan
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.units import parse_duration
from htcsim.workload.lublin import generate_lublin
from htcsim.workload.swf_writer import write_workload_swf

runner = CliRunner()


def _cli() -> typer.Typer:
    """The ``htcsim`` application, where ``plan`` is registered."""
    from htcsim.cli.app import app

    return app


def workload_of(
    rows: list[tuple[int, int, int]],
    nodes: int,
    *,
    cores: int = 1,
    after: dict[int, int] | None = None,
) -> Workload:
    """Jobs from (submit, n_tasks, run = walltime) rows on ``nodes`` nodes of ``cores``
    cores; ``after`` maps a job id to the job it follows (SWF field 17, think time 0)."""
    jobs = empty_jobs(len(rows))
    for k, (submit, tasks, run) in enumerate(rows):
        jobs[k]["job_id"] = k + 1
        jobs[k]["submit_s"] = submit
        jobs[k]["n_tasks"] = tasks
        jobs[k]["walltime_s"] = run
        jobs[k]["run_s"] = run
    for child, parent in (after or {}).items():
        jobs[child - 1]["preceding_job_id"] = parent
        jobs[child - 1]["think_time_s"] = 0
    return Workload(name="hand", jobs=jobs, machine=Machine(n_nodes=nodes, cores_per_node=cores))


def burst(n_jobs: int, nodes: int) -> Workload:
    """``n_jobs`` one-node jobs of 100 s, all submitted at 0."""
    return workload_of([(0, 1, 100)] * n_jobs, nodes)


def burst_p95(n_jobs: int, fleet: int) -> float:
    """The closed form: job k starts at 100 * (k // fleet)."""
    return float(np.percentile([100 * (k // fleet) for k in range(n_jobs)], 95))


def brute_force(n_jobs: int, target: float) -> int:
    return next(f for f in range(1, n_jobs + 1) if burst_p95(n_jobs, f) <= target)


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("30m", 1800),
        ("30min", 1800),
        ("90s", 90),
        ("90", 90),
        ("1h30m", 5400),
        ("1.5d", 129_600),
        (" 2 H ", 7200),
        ("0", 0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "-1h", "h", "2h!"])
def test_bad_durations_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="2h"):
        parse_duration(text)


def test_growth_two_halves_every_interarrival_time() -> None:
    submits = [1000, 1010, 1030, 1070, 1070, 1150]
    workload = workload_of([(t, 1, 50) for t in submits], 4, after={3: 2})
    scaled = scale_arrivals(workload, 2)
    jobs = scaled.jobs
    assert jobs["submit_s"].tolist() == [1000, 1005, 1015, 1035, 1035, 1075]
    np.testing.assert_array_equal(np.diff(jobs["submit_s"]), np.diff(submits) // 2)
    # everything but the submit times is the log's: order, sizes, runs, dependencies
    for column in ("job_id", "n_tasks", "run_s", "walltime_s", "preceding_job_id", "think_time_s"):
        np.testing.assert_array_equal(jobs[column], workload.jobs[column])
    assert workload.jobs["submit_s"].tolist() == submits, "the input is not modified"
    assert scale_arrivals(workload, 1.0) is workload
    slower = scale_arrivals(workload, 0.5)
    np.testing.assert_array_equal(np.diff(slower.jobs["submit_s"]), np.diff(submits) * 2)


def test_growth_rounds_down_and_keeps_the_order() -> None:
    workload = workload_of([(0, 1, 10), (1, 1, 10), (2, 1, 10), (3, 1, 10)], 1)
    assert scale_arrivals(workload, 1.5).jobs["submit_s"].tolist() == [0, 0, 1, 2]
    assert scale_arrivals(workload, 4).jobs["job_id"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("factor", [0, -1.5, math.nan, math.inf, True])
def test_a_growth_factor_must_be_positive(factor: float) -> None:
    with pytest.raises(ValueError, match="growth factor must be a positive number"):
        scale_arrivals(burst(2, 1), factor)
    with pytest.raises(ValueError, match="growth factor"):
        plan_fleet(burst(2, 1), Policy(), 0, growth=(1.0, factor), workers=1)


def test_with_fleet_keeps_the_node_shape() -> None:
    workload = workload_of([(0, 1, 10)], 10, cores=8)
    fleet = with_fleet(workload, 3)
    assert fleet.n_nodes == 3 and fleet.total_cores == 24
    gpu = Cluster((NodeType("gpu", count=2, cores=32, mem_mib=64_000, gpus=4),))
    assert with_fleet(gpu, 7).node_types == (
        NodeType("gpu", count=7, cores=32, mem_mib=64_000, gpus=4),
    )
    two = Cluster((NodeType("a", 1, 4), NodeType("b", 1, 8)))
    with pytest.raises(ValueError, match="one node type; this cluster has 2"):
        with_fleet(two, 4)
    with pytest.raises(ValueError, match="at least one node"):
        with_fleet(workload, 0)


def test_a_cluster_file_node_type_is_the_fleet_unit() -> None:
    # 8 one-core jobs of 100 s at 0 on 4-core nodes: 2 nodes run them all at once
    workload = workload_of([(0, 1, 100)] * 8, 1)
    cluster = Cluster((NodeType("cpu", count=1, cores=4, price_per_hour=1.5),))
    plan = plan_fleet(workload, Policy(), 0.0, cluster=cluster, workers=1)
    assert plan.smallest() == 2
    assert plan.node == cluster.node_types[0]
    assert plan.plan_for(1.0).points["p95_wait_s"].to_list()[:2] == pytest.approx([100.0, 0.0])


def test_the_lower_bound_counts_whole_tasks_per_node() -> None:
    workload = workload_of([(0, 5, 10), (0, 4, 10)], 10, cores=4)
    workload.jobs["cores_per_task"][1] = 3
    # job 1: 5 one-core tasks, 4 a node: 2 nodes. Job 2: 4 tasks of 3 cores, one a
    # 4-core node: 4 nodes, where counting cores (12 / 4) would say 3.
    assert min_fleet(workload, NodeType("n", 1, cores=4)) == 4
    assert min_fleet(workload, NodeType("n", 1, cores=6)) == 2
    assert min_fleet(workload, NodeType("n", 1, cores=64)) == 1
    with pytest.raises(ValueError, match="job 2 has a task larger than a node"):
        min_fleet(workload, NodeType("n", 1, cores=2))


# --------------------------------------------------------------------------- the hand case


@pytest.mark.parametrize("machine", [1, 16], ids=["machine-too-small", "machine-too-big"])
@pytest.mark.parametrize(
    ("target", "smallest"), [(300.0, 1), (100.0, 2), (90.0, 3), (84.0, 4), (0.0, 4)]
)
def test_four_jobs_smallest_fleet(machine: int, target: float, smallest: int) -> None:
    # p95 of the waits with 1..4 nodes: 285, 100, 85, 0
    assert [burst_p95(4, f) for f in (1, 2, 3, 4)] == pytest.approx([285, 100, 85, 0])
    plan = plan_fleet(burst(4, machine), Policy(), target, workers=1)
    assert plan.smallest() == smallest
    assert plan.lower_bound == 1
    points = plan.plan_for(1.0).points
    for size, p95 in zip(points["size"], points["p95_wait_s"], strict=True):
        assert p95 == pytest.approx(burst_p95(4, size))
    explicit = plan_fleet(burst(4, machine), Policy(), target, sizes=[5, 1, 3, 2, 4], workers=1)
    assert explicit.smallest() == smallest
    assert explicit.plan_for(1.0).points["size"].to_list() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("grid", [2, DEFAULT_GRID, 5])
@pytest.mark.parametrize("machine", [1, 8, 64])
def test_the_search_finds_the_brute_force_answer(grid: int, machine: int) -> None:
    n_jobs = 40
    for target in (0.0, 50.0, 150.0, 420.0, 1000.0, 4000.0):
        plan = plan_fleet(burst(n_jobs, machine), Policy(), target, workers=1, grid=grid)
        expected = brute_force(n_jobs, target)
        growth_plan = plan.plan_for(1.0)
        assert growth_plan.smallest == expected, (target, growth_plan.points)
        sizes = growth_plan.points["size"].to_list()
        assert expected in sizes
        assert expected == 1 or expected - 1 in sizes, "the answer's neighbour below was tried"
        assert growth_plan.smallest_p95_wait_s == pytest.approx(burst_p95(n_jobs, expected))


def test_with_grid_2_it_is_a_bisection() -> None:
    # 40 jobs, 64 nodes: the machine meets a 150 s target; bisection between 1 and 64
    plan = plan_fleet(burst(40, 64), Policy(), 150.0, workers=1, grid=2)
    assert plan.smallest() == brute_force(40, 150.0) == 19
    # 64 and 128 (the bracket), 1 and 32 (the grid), then one size per round
    sizes = plan.plan_for(1.0).points["size"].to_list()
    assert {1, 32, 64, 128} <= set(sizes) and sizes[-2:] == [64, 128]
    assert len(sizes) <= 4 + math.ceil(math.log2(32))


def test_the_answer_skips_a_dip_below_a_miss() -> None:
    """Non-monotone waits: the smallest size from which every larger one meets."""
    meets, misses = _Point(10, 0, 0, 0), _Point(99, 0, 0, 0)
    points = {1: misses, 2: meets, 3: misses, 4: meets, 5: meets, 6: meets}

    def ok(p: _Point) -> bool:
        return p.p95_wait_s <= 50

    assert _smallest_meeting(points, ok) == 4
    assert _smallest_meeting({**points, 7: misses}, ok) is None


def test_growth_needs_more_nodes() -> None:
    # one 100 s job every 100 s: one node keeps up; at twice the rate, two are needed
    workload = workload_of([(100 * k, 1, 100) for k in range(20)], 1)
    plan = plan_fleet(workload, Policy(), 0.0, growth=(1.0, 2.0, 2), workers=1)
    assert [p.growth for p in plan.plans] == [1.0, 2.0], "duplicates count once"
    assert plan.smallest(1.0) == 1
    assert plan.smallest(2.0) == 2
    frame = plan.to_frame()
    assert frame.columns == [
        "growth",
        "size",
        "p95_wait_s",
        "mean_wait_s",
        "utilization",
        "makespan_s",
        "meets_target",
        "target_p95_s",
        "chosen",
    ]
    chosen = frame.filter(frame["chosen"])
    assert chosen["growth"].to_list() == [1.0, 2.0]
    assert chosen["size"].to_list() == [1, 2]
    # one node, growth 1: busy the whole span of 2,000 s
    one = frame.filter((frame["growth"] == 1.0) & (frame["size"] == 1)).row(0, named=True)
    assert one["utilization"] == pytest.approx(1.0)
    assert one["makespan_s"] == 2000


def test_a_wait_no_fleet_removes_is_not_reachable(tmp_path: Path) -> None:
    # job 2 follows job 1: it waits 100 s however many nodes there are
    workload = workload_of([(0, 1, 100), (0, 1, 100)], 1, after={2: 1})
    plan = plan_fleet(workload, Policy(), 50.0, workers=1, cap_factor=8)
    growth_plan = plan.plan_for(1.0)
    assert growth_plan.smallest is None
    assert growth_plan.smallest_p95_wait_s is None
    assert growth_plan.searched_up_to == 8
    assert growth_plan.points["size"].to_list() == [1, 2, 4, 8]
    assert growth_plan.points["p95_wait_s"].to_list() == pytest.approx([95.0] * 4)
    assert not plan.to_frame()["chosen"].any()
    assert plot_plan(plan, tmp_path / "unreachable.png").stat().st_size > 0


def test_bad_arguments_are_refused() -> None:
    workload = workload_of([(0, 3, 100)], 4)
    with pytest.raises(ValueError, match="target p95 wait must be >= 0"):
        plan_fleet(workload, Policy(), -1.0, workers=1)
    with pytest.raises(ValueError, match=r"fleet of 2 node\(s\) cannot hold the largest job"):
        plan_fleet(workload, Policy(), 0.0, sizes=[2, 3], workers=1)
    with pytest.raises(ValueError, match="fleet size must be an integer >= 1"):
        plan_fleet(workload, Policy(), 0.0, sizes=[0, 3], workers=1)
    with pytest.raises(ValueError, match="sizes is empty"):
        plan_fleet(workload, Policy(), 0.0, sizes=[], workers=1)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        plan_fleet(workload, Policy(), 0.0, workers=0)
    with pytest.raises(ValueError, match="grid must be an integer >= 2"):
        plan_fleet(workload, Policy(), 0.0, workers=1, grid=1)
    with pytest.raises(ValueError, match="has no job"):
        plan_fleet(replace(workload, jobs=workload.jobs[:0]), Policy(), 0.0, workers=1)
    with pytest.raises(ValueError, match="at least one growth factor"):
        plan_fleet(workload, Policy(), 0.0, growth=(), workers=1)


def test_progress_reports_every_replay() -> None:
    steps: list[PlanStep] = []
    plan = plan_fleet(burst(10, 4), Policy(), 100.0, workers=1, progress=steps.append)
    assert [s.done for s in steps] == list(range(1, len(steps) + 1))
    assert steps[-1].scheduled == len(steps) == plan.plan_for(1.0).points.height
    assert all(s.meets_target == (s.p95_wait_s <= 100.0) for s in steps)


def test_parallel_and_serial_plans_are_identical(tmp_path: Path) -> None:
    workload = generate_lublin(1_500, 64, seed=5, load=0.9)
    args = (workload, Policy(), 3600.0)
    serial = plan_fleet(*args, growth=(1.0, 1.5), workers=1)
    parallel = plan_fleet(*args, growth=(1.0, 1.5), workers=2)
    assert serial.to_frame().equals(parallel.to_frame())
    assert [p.smallest for p in serial.plans] == [p.smallest for p in parallel.plans]
    now, later = serial.smallest(1.0), serial.smallest(1.5)
    assert now is not None and later is not None
    assert later > now
    # each point is the replay simulate gives on that fleet
    size = now
    direct = summarize(simulate(workload, Policy(), cluster=with_fleet(workload, size)))
    assert serial.plan_for(1.0).smallest_p95_wait_s == direct["p95_wait_s"]
    assert plot_plan(parallel, tmp_path / "plan.png").stat().st_size > 0


@pytest.mark.skipif(not hasattr(Policy(), "autoscale"), reason="Policy has no autoscaling yet")
def test_with_autoscaling_the_size_is_the_max_bound() -> None:
    policy = Policy(autoscale=True)
    assert _fleet_policy(policy, 3, "node").autoscale_max_nodes == 3
    assert _fleet_policy(Policy(), 3, "node") == Policy(), "no autoscaling: unchanged"
    workload = burst(4, 4)
    # what the autoscaler does is the kernel's business: compare with direct replays
    direct = {
        size: summarize(
            simulate(
                workload,
                replace(policy, autoscale_max_nodes=size),
                cluster=with_fleet(workload, size),
            )
        )["p95_wait_s"]
        for size in range(1, 9)
    }
    plan = plan_fleet(workload, policy, 1e9, sizes=list(direct), workers=1)
    assert plan.autoscale
    points = plan.plan_for(1.0).points
    assert dict(zip(points["size"], points["p95_wait_s"], strict=True)) == direct
    target = direct[4]
    expected = min(s for s in direct if all(direct[t] <= target for t in direct if t >= s))
    assert plan_fleet(workload, policy, target, workers=1).smallest() == expected


# --------------------------------------------------------------------------- command line


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    swf = tmp_path / "hand.swf"
    write_workload_swf(swf, burst(4, 2))
    out = str(tmp_path / "plan")
    for args, message in (
        (["--target-wait-p95", "soon"], "cannot read 'soon' as a duration"),
        (["--target-wait-p95", "1h", "--sizes", "2,x"], "'x' is not a fleet size"),
        (["--target-wait-p95", "1h", "--growth", "0"], "--growth must be a positive factor"),
        (["--target-wait-p95", "1h", "--sizes", "0"], "fleet size"),
    ):
        result = runner.invoke(_cli(), ["plan", str(swf), "--workers", "1", "-o", out, *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "plan").exists()


def test_cli_unreachable_target_exits_1_after_writing(tmp_path: Path) -> None:
    swf = tmp_path / "chain.swf"
    write_workload_swf(swf, workload_of([(0, 1, 100), (0, 1, 100)], 1, after={2: 1}))
    out = tmp_path / "plan"
    result = runner.invoke(
        _cli(),
        ["plan", str(swf), "--target-wait-p95", "50s", "--workers", "1", "-o", str(out)],
    )
    assert result.exit_code == 1, result.output
    assert "not reachable" in result.output
    assert (out / "plan.csv").exists() and (out / "plan.png").exists()


def test_cli_explicit_sizes_on_a_hand_workload(tmp_path: Path) -> None:
    import polars as pl

    swf = tmp_path / "burst.swf"
    write_workload_swf(swf, burst(4, 2))
    out = tmp_path / "plan"
    result = runner.invoke(
        _cli(),
        ["plan", str(swf), "--target-wait-p95", "90", "--sizes", "1,2,3,4",
         "--growth", "1", "--growth", "2", "--workers", "1", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pl.read_csv(out / "plan.csv")
    assert table.height == 8
    assert table.filter(pl.col("chosen"))["size"].to_list() == [3, 3]  # all at 0 either way


@pytest.mark.trace
def test_cli_plans_a_slice_of_a_real_log(trace_dir: Path, tmp_path: Path) -> None:
    import polars as pl

    log = trace_dir / "CTC-SP2-1996-3.1-cln.swf.gz"
    if not log.exists():
        pytest.fail(f"{log} is missing; HTCSIM_TRACE_DIR must hold the PWA logs")
    out = tmp_path / "plan"
    args = ["plan", str(log), "--target-wait-p95", "2h", "--max-jobs", "2000"]
    result = runner.invoke(_cli(), [*args, "--growth", "1.5", "--workers", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "smallest fleet" in result.output
    table = pl.read_csv(out / "plan.csv")
    chosen = table.filter(pl.col("chosen"))
    assert chosen.height == 1 and chosen["p95_wait_s"][0] <= 7200
    assert (table.filter(pl.col("size") > chosen["size"][0])["meets_target"]).all()
    below = table.filter(pl.col("size") < chosen["size"][0])
    assert not below.filter(pl.col("size") == below["size"].max())["meets_target"][0]
    assert (out / "plan.png").stat().st_size > 10_000
