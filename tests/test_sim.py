"""The SimPy driver: batching of simultaneous events, determinism, edges."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from htcsim.kernel import KernelInputError
from htcsim.model import Machine, Workload, empty_jobs
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.workload.lublin import generate_lublin


def workload_of(rows: list[tuple[int, int, int, int]], cores: int) -> Workload:
    """Jobs from (submit, n_tasks, walltime, run) rows on ``cores`` one-core nodes."""
    jobs = empty_jobs(len(rows))
    for k, (submit, size, wall, run) in enumerate(rows):
        jobs[k]["job_id"] = k + 1
        jobs[k]["submit_s"] = submit
        jobs[k]["n_tasks"] = size
        jobs[k]["walltime_s"] = wall
        jobs[k]["run_s"] = run
    return Workload(name="hand", jobs=jobs, machine=Machine(n_nodes=cores, cores_per_node=1))


def test_a_completion_and_an_arrival_at_the_same_instant_are_one_pass() -> None:
    # 1 core: A runs 0..10; B arrives at 10, the instant A ends: it starts at 10.
    result = simulate(workload_of([(0, 1, 10, 10), (10, 1, 10, 10)], cores=1))
    assert result.start_s.tolist() == [0, 10]
    # passes at t=0, t=10 (A's end and B's arrival together) and t=20 (B's end): not 4
    assert result.counters["passes"] == 3


def test_replay_is_deterministic_bit_for_bit() -> None:
    workload = generate_lublin(3_000, 64, seed=7, load=0.9)
    for mode in ("none", "easy", "conservative"):
        first = simulate(workload, Policy(backfill=mode))
        again = simulate(workload, Policy(backfill=mode))
        assert first.start_s.tobytes() == again.start_s.tobytes()
        assert first.end_s.tobytes() == again.end_s.tobytes()


def test_every_job_runs_min_of_run_and_walltime() -> None:
    workload = generate_lublin(2_000, 32, seed=3, load=0.8)
    result = simulate(workload, Policy(backfill="easy"))
    jobs = workload.jobs
    assert (result.start_s >= jobs["submit_s"]).all()
    np.testing.assert_array_equal(result.run_s, np.minimum(jobs["run_s"], jobs["walltime_s"]))


def test_backfilling_helps_on_a_busy_machine() -> None:
    workload = generate_lublin(3_000, 64, seed=11, load=0.9)
    waits = {m: simulate(workload, Policy(backfill=m)).wait_s.mean() for m in ("none", "easy")}
    assert waits["easy"] < waits["none"]


def test_progress_reports_every_event() -> None:
    seen: list[int] = []
    workload = generate_lublin(500, 32, seed=1)
    simulate(workload, progress=seen.append)
    assert seen[-1] == 2 * len(workload)  # one arrival and one completion per job


def test_an_impossible_job_is_rejected_naming_it() -> None:
    workload = workload_of([(0, 1, 10, 10), (5, 9, 10, 10)], cores=4)
    with pytest.raises(KernelInputError, match="job 2 asks for more than the whole cluster"):
        simulate(workload)


def test_priority_order_needs_priorities() -> None:
    workload = workload_of([(0, 1, 10, 10)], cores=1)
    with pytest.raises(KernelInputError, match="priority"):
        simulate(workload, Policy(order="priority"))
    result = simulate(workload, Policy(order="priority"), priority=np.array([1.0]))
    assert result.start_s.tolist() == [0]


def test_time_series_is_reachable_from_the_result() -> None:
    result = simulate(workload_of([(0, 2, 10, 10), (0, 2, 10, 5)], cores=2))
    series = result.time_series()
    assert series["busy_cores"].max() == 2


def test_sampled_start_estimates_are_exact_when_runs_match_requests() -> None:
    # Every job runs exactly its requested time and arrives in FCFS order, so
    # the profile never changes under a job: each estimate is its real start.
    from htcsim.metrics import estimate_error_summary, estimate_errors

    rows = [(k, 1 + k % 3, 50 + 10 * (k % 4), 50 + 10 * (k % 4)) for k in range(40)]
    workload = workload_of(rows, cores=3)
    plain = simulate(workload, Policy(backfill="conservative"))
    sampled = simulate(workload, Policy(backfill="conservative"), estimate_sample=1)
    assert sampled.start_s.tolist() == plain.start_s.tolist()  # sampling decides nothing
    errors = estimate_errors(sampled)
    assert errors.height > 10
    assert errors["error_s"].to_list() == [0] * errors.height
    assert estimate_error_summary(sampled)["p90_abs_error_s"] == 0


def test_estimates_of_jobs_that_end_early_err_on_the_late_side() -> None:
    from htcsim.metrics import estimate_errors

    workload = generate_lublin(1_500, 32, seed=5, load=0.9)
    result = simulate(workload, Policy(backfill="easy"), estimate_sample=5)
    errors = estimate_errors(result)["error_s"].to_numpy()
    assert errors.size > 50
    assert np.median(errors) <= 0  # runs end before their requests: starts come early


def test_the_estimate_summary_shows_the_late_starts() -> None:
    """Four sampled jobs started 100 s early, on time, 50 s late and 3,600 s
    late: the median error (25 s) says little; a quarter early, half late,
    the worst an hour late."""
    from htcsim.metrics import estimate_error_summary
    from htcsim.schedule import ESTIMATE_DTYPE, SimResult

    workload = workload_of([(0, 1, 10, 10)] * 4, cores=1)
    start = np.array([100, 200, 300, 4000])
    estimates = np.array([(0, 0, 200), (1, 0, 200), (2, 0, 250), (3, 0, 400)], dtype=ESTIMATE_DTYPE)
    result = SimResult(workload, Policy(), start, start + 10, estimates=estimates)
    summary = estimate_error_summary(result)
    assert summary["median_error_s"] == 25.0
    assert (summary["early_fraction"], summary["late_fraction"]) == (0.25, 0.5)
    assert summary["max_late_s"] == 3600.0


def test_the_command_line_prints_the_late_share_of_the_estimates() -> None:
    from typer.testing import CliRunner

    from htcsim.cli.app import app
    from htcsim.metrics import estimate_error_summary
    from htcsim.workload.loader import load_workload

    args = ["simulate", "--max-jobs", "2000", "--order", "multifactor", "--estimate-sample", "5"]
    output = " ".join(CliRunner().invoke(app, args).output.split())
    policy = Policy(order="multifactor")
    errors = estimate_error_summary(
        simulate(load_workload(None, max_jobs=2000), policy, estimate_sample=5)
    )
    assert errors["late_fraction"] > 0
    assert (
        f"{errors['early_fraction']:.0%} started early, {errors['late_fraction']:.0%} late "
        f"(worst {errors['max_late_s'] / 3600:.1f} h late)"
    ) in output


def _stepwise_and_advancing(
    workload: Workload, policy: Policy, failures: np.ndarray | None = None
) -> tuple[dict[str, object], dict[str, object], int]:
    """The replay's outputs when the driver wakes for every step (a custom step:
    the feed's plain ``step``) and when it wakes only where something can be
    decided (its default, ``advance``), and how many steps ``advance`` took on
    its own. A third replay records the times the driver woke at: every start
    is at one of them (a step the driver did not see started nothing)."""
    from htcsim.sim import driver

    outputs = []
    quiet = 0
    woke: list[int] = []
    for kind in ("every step", "default", "recorded"):
        pooled = driver.pool_replay(workload, policy, None, failures)
        kernel, feed, _ = driver._prepare(workload, policy, None, None, pooled)
        raw_feed = feed.raw[0]
        feed.record_series(0)
        if failures is not None:
            driver._set_node_failures(feed, kernel, failures)

        def recorded(state: object, now: int, advance: Any = raw_feed.advance) -> int:  # type: ignore[attr-defined]
            woke.append(now)
            return int(advance(state, now))

        steps = {"every step": raw_feed.step, "default": None, "recorded": recorded}  # type: ignore[attr-defined]
        _, clock = driver.run_from(int(workload.jobs["submit_s"][0]), feed, None, steps[kind])
        outputs.append(
            {
                "start": kernel.start_times().tolist(),
                "end": kernel.end_times().tolist(),
                "series": feed.series()[0].tolist(),
                "clock": clock,
                "node_seconds": kernel.node_seconds(clock).tolist(),
                "counters": dict(kernel.counters),
            }
        )
        if kind == "default":
            quiet = int(raw_feed.n_quiet)  # type: ignore[attr-defined]
    assert outputs[2] == outputs[1]
    started = {t for t in outputs[1]["start"] if t >= 0}  # type: ignore[attr-defined]
    assert started <= set(woke)
    return outputs[0], outputs[1], quiet


@pytest.mark.parametrize("mode", ["none", "easy", "conservative"])
def test_waking_only_where_something_can_be_decided_changes_nothing(mode: str) -> None:
    """The driver skips the wake-ups of steps holding only completions with an
    empty queue: schedules, the series, the clock at the end and node-hours are
    those of a wake-up per step, and such steps did happen."""
    workload = generate_lublin(3_000, 64, seed=3, load=0.6)
    every, advancing, quiet = _stepwise_and_advancing(workload, Policy(backfill=mode))
    assert advancing == every
    assert quiet > 100


def test_no_step_is_taken_alone_where_an_end_can_release_or_fail_something() -> None:
    """With node failures the same holds; with dependencies or autoscaling no
    step is taken without the driver (an end may release a dependent, the
    autoscaler decides at every step)."""
    from htcsim.sim.failures import failure_model

    workload = generate_lublin(2_000, 32, seed=5, load=0.7)
    failures = failure_model(32, 200 * 3600.0, 3600.0, 40 * 86_400, seed=2)
    every, advancing, quiet = _stepwise_and_advancing(workload, Policy(), failures)
    assert advancing == every and quiet > 0
    jobs = workload.jobs.copy()
    jobs["preceding_job_id"][10::50] = jobs["job_id"][9::50][: len(jobs[10::50])]
    chained = Workload(workload.name, jobs, workload.machine)
    every, advancing, quiet = _stepwise_and_advancing(chained, Policy())
    assert advancing == every and quiet == 0
    scaled = Policy(autoscale=True, autoscale_min_nodes=0, autoscale_max_nodes=32)
    every, advancing, quiet = _stepwise_and_advancing(workload, scaled)
    assert advancing == every and quiet == 0
