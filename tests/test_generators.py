"""Synthetic workload generators: determinism, invariants, and agreement with the models.

Statistical checks use fixed seeds; each tolerance is a few standard errors of the
quantity for the sample size used (worked out next to each check), so they are not
flaky, yet a wrong constant or a broken mechanism moves the statistic well outside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from htcsim.model import JOB_DTYPE, Machine, Workload
from htcsim.workload.htc import WALLTIME_GRANULARITY_S, generate_htc
from htcsim.workload.lublin import (
    BATCH,
    BUCKETS_PER_DAY,
    INTERACTIVE,
    MAX_LOG_RUNTIME,
    ROUND_ESTIMATES_S,
    SECONDS_PER_BUCKET,
    TYPELESS,
    LublinParams,
    _arrival_points,
    _points_to_seconds,
    arrival_weights,
    generate_lublin,
)

N_STAT = 20_000  # jobs for the statistical checks


@pytest.fixture(scope="module")
def batch128() -> Workload:
    return generate_lublin(N_STAT, 128, seed=12345)


def _check_common_invariants(w: Workload, max_cores_per_job: int) -> None:
    j = w.jobs
    n = len(w)
    assert j.dtype == JOB_DTYPE
    np.testing.assert_array_equal(j["job_id"], np.arange(1, n + 1))
    if n:
        assert j["submit_s"][0] == 0
    assert np.all(np.diff(j["submit_s"]) >= 0)
    assert np.all(j["run_s"] >= 1)
    assert np.all(j["walltime_s"] >= j["run_s"])
    assert np.all(j["n_tasks"] >= 1)
    assert np.all(j["n_tasks"] * j["cores_per_task"] <= max_cores_per_job)
    assert np.all(j["status"] == 1)
    assert np.all(j["user_id"] >= 1)


# ----------------------------------------------------------------------------
# Lublin & Feitelson
# ----------------------------------------------------------------------------


def test_lublin_same_seed_is_byte_identical() -> None:
    a = generate_lublin(5_000, 128, seed=7, job_types="mixed")
    b = generate_lublin(5_000, 128, seed=7, job_types="mixed")
    assert a.jobs.tobytes() == b.jobs.tobytes()
    assert a.name == b.name == "lublin-128-seed7"
    assert a.machine == Machine(n_nodes=128, cores_per_node=1)


def test_lublin_different_seed_differs() -> None:
    a = generate_lublin(1_000, 128, seed=1)
    b = generate_lublin(1_000, 128, seed=2)
    for col in ("submit_s", "run_s", "n_tasks", "user_id"):
        assert not np.array_equal(a.jobs[col], b.jobs[col])


@pytest.mark.parametrize("jobs", ["batch", "interactive", "typeless", "mixed"])
@pytest.mark.parametrize("n_procs", [1, 2, 8, 100, 128, 1024])
def test_lublin_invariants(jobs: str, n_procs: int) -> None:
    w = generate_lublin(3_000, n_procs, seed=3, job_types=jobs, n_users=40)  # type: ignore[arg-type]
    _check_common_invariants(w, n_procs)
    j = w.jobs
    assert len(w) == 3_000
    assert np.all(j["n_tasks"] <= n_procs)
    assert np.all(j["cores_per_task"] == 1)
    assert np.all(j["user_id"] <= 40)
    assert np.all(j["run_s"] <= math.exp(MAX_LOG_RUNTIME))
    expected_queues = {"batch": {1}, "typeless": {1}, "interactive": {0}, "mixed": {0, 1}}[jobs]
    assert set(np.unique(j["queue_id"]).tolist()) == expected_queues
    if n_procs == 1:
        assert np.all(j["n_tasks"] == 1)


def test_lublin_zero_jobs() -> None:
    w = generate_lublin(0, 64, seed=1)
    assert len(w) == 0 and w.jobs.dtype == JOB_DTYPE


def test_lublin_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_procs"):
        generate_lublin(10, 0, seed=1)
    with pytest.raises(ValueError, match="start_hour"):
        generate_lublin(10, 8, seed=1, start_hour=24)
    with pytest.raises(ValueError, match="load"):
        generate_lublin(10, 8, seed=1, load=0.0)
    with pytest.raises(ValueError, match="job_types"):
        generate_lublin(10, 8, seed=1, job_types="gpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("params,jobs", [(BATCH, "batch"), (TYPELESS, "typeless")])
def test_lublin_serial_fraction(params: LublinParams, jobs: str) -> None:
    w = generate_lublin(N_STAT, 128, seed=11, job_types=jobs)  # type: ignore[arg-type]
    frac = float(np.mean(w.jobs["n_tasks"] == 1))
    # SE = sqrt(0.29 * 0.71 / 20000) ~ 0.0032: 0.015 is about 4.7 SE.
    assert abs(frac - params.serial_prob) < 0.015


def _prob_rounds_to_power_of_two(low: float, med: float, hi: float, u_prob: float) -> float:
    """P(round(2**x) is a power of two) for x from the two-stage uniform, computed exactly."""

    def overlap(a: float, b: float, lo: float, up: float) -> float:
        return max(0.0, min(b, up) - max(a, lo))

    total = 0.0
    for k in range(0, 12):
        a, b = math.log2(max(2**k - 0.5, 1e-300)), math.log2(2**k + 0.5)
        total += u_prob * overlap(a, b, low, med) / (med - low)
        total += (1 - u_prob) * overlap(a, b, med, hi) / (hi - med)
    return total


def test_lublin_power_of_two_fraction(batch128: Workload) -> None:
    sizes = batch128.jobs["n_tasks"]
    parallel = sizes[sizes > 1]
    frac = float(np.mean((parallel & (parallel - 1)) == 0))
    p = BATCH
    q = _prob_rounds_to_power_of_two(p.u_low, p.u_med, p.u_hi, p.u_prob)
    other = 1.0 - p.serial_prob - p.pow2_prob
    expected = (p.pow2_prob + other * q) / (1.0 - p.serial_prob)
    # ~14,000 parallel jobs, expected ~0.96: SE ~ 0.0017; 0.01 is about 6 SE.
    assert abs(frac - expected) < 0.01
    # The two-stage uniform: P(size <= 2**u_med) among parallel jobs. Power-of-two jobs
    # round x, so x in [u_med, u_med + 0.5) still lands on 2**u_med: count that in.
    small = float(np.mean(parallel <= 2**p.u_med))
    share_pow2 = p.pow2_prob / (1 - p.serial_prob)
    upper_width = p.u_hi - p.u_med
    above_med = share_pow2 * 0.5 + (1 - share_pow2) * (math.log2(2**p.u_med + 0.5) - p.u_med)
    expected_small = p.u_prob + (1 - p.u_prob) * above_med / upper_width
    assert abs(small - expected_small) < 0.02
    assert sizes.max() <= 128


def test_lublin_runtime_hyper_gamma(batch128: Workload) -> None:
    stats = pytest.importorskip("scipy.stats")
    j = batch128.jobs
    serial_runs = j["run_s"][j["n_tasks"] == 1]
    p = BATCH.pa * 1 + BATCH.pb

    def mixture_cdf(x: float) -> float:
        return p * stats.gamma.cdf(x, BATCH.a1, scale=BATCH.b1) + (1 - p) * stats.gamma.cdf(
            x, BATCH.a2, scale=BATCH.b2
        )

    norm = mixture_cdf(MAX_LOG_RUNTIME)  # draws above the limit are redrawn
    for seconds in (60, 600, 3_600, 18_000):
        # floor(exp(g)) < s  <=>  g < ln(s)
        expected = mixture_cdf(math.log(seconds)) / norm
        observed = float(np.mean(serial_runs < seconds))
        # ~5,900 serial jobs: SE <= 0.0065; 0.025 is about 4 SE.
        assert abs(observed - expected) < 0.025, seconds


def test_lublin_big_jobs_run_longer(batch128: Workload) -> None:
    j = batch128.jobs
    # p = pa * size + pb falls with size: more jobs from the long gamma.
    assert np.median(j["run_s"][j["n_tasks"] >= 32]) > 2 * np.median(j["run_s"][j["n_tasks"] == 1])


def test_lublin_daily_cycle_more_arrivals_by_day(batch128: Workload) -> None:
    clock_hour = (batch128.jobs["submit_s"] % 86_400) // 3_600
    per_hour = np.bincount(clock_hour, minlength=24) / len(batch128)
    day = per_hour[10:17].mean()  # 10:00-17:00
    night = per_hour[0:7].mean()  # 00:00-07:00
    assert day > 2.5 * night  # the model's ratio is about 4


@pytest.mark.parametrize("start_hour", [0, 12])
def test_lublin_daily_cycle_matches_model(start_hour: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    # Bucket weights computed independently from the C program's definition.
    weights = np.zeros(BUCKETS_PER_DAY)
    for i in range(11, 11 + BUCKETS_PER_DAY):
        weights[(i - 1) % BUCKETS_PER_DAY] = stats.gamma.cdf(
            i + 0.5, BATCH.anum, scale=BATCH.bnum
        ) - stats.gamma.cdf(i - 0.5, BATCH.anum, scale=BATCH.bnum)
    np.testing.assert_allclose(arrival_weights(BATCH), weights / weights.mean(), rtol=1e-9)
    expected = (weights / weights.sum()).reshape(4, 12).sum(axis=1)  # six-hour blocks

    w = generate_lublin(N_STAT, 128, seed=5, start_hour=start_hour)
    clock = (w.jobs["submit_s"] + start_hour * 3_600) % 86_400
    observed = np.bincount(clock // 21_600, minlength=4) / len(w)
    # Arrivals cluster (heavy-tailed gaps), so the SE is a few times the binomial 0.003;
    # over a dozen seeds the largest deviation seen is 0.016.
    np.testing.assert_allclose(observed, expected, atol=0.04)


def test_arrival_mapping_is_the_c_bucket_walk() -> None:
    """The vectorised inverse equals m_lublin99.c's calc_next_arrive loop."""
    rng = np.random.default_rng(0)
    points = _arrival_points(rng, 3_000, INTERACTIVE, first_at_zero=False)
    gaps = np.diff(points, prepend=0.0)
    weights = arrival_weights(INTERACTIVE)
    start_bucket = 17
    bucket, held, reminder, t = start_bucket, 0.0, 0.0, 0.0
    walk = []
    for g in gaps:
        held += g
        step = 0.0
        while held > weights[bucket]:
            held -= weights[bucket]
            bucket = (bucket + 1) % BUCKETS_PER_DAY
            step += SECONDS_PER_BUCKET
        new_reminder = held / weights[bucket]
        step += SECONDS_PER_BUCKET * (new_reminder - reminder)
        reminder = new_reminder
        t += step
        walk.append(t)
    np.testing.assert_allclose(
        _points_to_seconds(points, weights, start_bucket), walk, rtol=1e-9, atol=1e-3
    )


def test_lublin_target_load() -> None:
    for jobs in ("batch", "mixed"):
        w = generate_lublin(5_000, 128, seed=9, job_types=jobs, load=0.75)  # type: ignore[arg-type]
        j = w.jobs
        offered = float(np.sum(j["run_s"] * j["n_tasks"])) / (128 * j["submit_s"][-1])
        assert abs(offered - 0.75) < 0.01, jobs


def test_lublin_estimates() -> None:
    exact = generate_lublin(2_000, 64, seed=4, estimate="exact").jobs
    np.testing.assert_array_equal(exact["walltime_s"], exact["run_s"])
    rounded = generate_lublin(2_000, 64, seed=4, estimate="rounded", estimate_factor=3.0).jobs
    for col in ("submit_s", "run_s", "n_tasks", "user_id"):  # only the request differs
        np.testing.assert_array_equal(rounded[col], exact[col])
    wall = rounded["walltime_s"]
    on_ladder = np.isin(wall, ROUND_ESTIMATES_S) | (wall % 86_400 == 0)
    assert on_ladder.all()
    assert np.all(wall >= rounded["run_s"])
    # Never more than the factor times one rung of the ladder (at most x2.5 per rung).
    assert np.all(wall <= np.maximum(2.5 * (3.0 * rounded["run_s"] + 1), 60))


def test_lublin_users_are_zipf(batch128: Workload) -> None:
    counts = np.bincount(batch128.jobs["user_id"], minlength=101)[1:]
    harmonic = np.sum(1.0 / np.arange(1, 101))
    # P(user 1) = 1 / H_100 ~ 0.193; SE ~ 0.0028.
    assert abs(counts[0] / N_STAT - 1 / harmonic) < 0.015
    assert counts[0] > counts[1] > counts[9] > counts[99]


# ----------------------------------------------------------------------------
# HTC
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def htc50k() -> Workload:
    return generate_htc(50_000, 50, 8, seed=2024)


def test_htc_same_seed_is_byte_identical() -> None:
    a = generate_htc(20_000, 10, 16, seed=3)
    b = generate_htc(20_000, 10, 16, seed=3)
    assert a.jobs.tobytes() == b.jobs.tobytes()
    assert a.machine == Machine(n_nodes=10, cores_per_node=16)
    c = generate_htc(20_000, 10, 16, seed=4)
    for col in ("submit_s", "run_s", "walltime_s", "user_id"):
        assert not np.array_equal(a.jobs[col], c.jobs[col])


@pytest.mark.parametrize("n_jobs", [0, 1, 2, 1_000])
def test_htc_invariants(n_jobs: int) -> None:
    w = generate_htc(n_jobs, 4, 4, seed=1, n_users=30)
    assert len(w) == n_jobs
    _check_common_invariants(w, 1)
    j = w.jobs
    assert np.all(j["n_tasks"] == 1) and np.all(j["cores_per_task"] == 1)
    assert np.all(j["walltime_s"] % WALLTIME_GRANULARITY_S == 0)
    assert np.all(j["user_id"] <= 30)


def test_htc_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="load"):
        generate_htc(10, 1, 1, seed=1, load=-1.0)
    with pytest.raises(ValueError, match="bag_fraction"):
        generate_htc(10, 1, 1, seed=1, bag_fraction=1.5)
    with pytest.raises(ValueError, match="walltime_factor"):
        generate_htc(10, 1, 1, seed=1, walltime_factor=(0.5, 2.0))
    with pytest.raises(ValueError, match="node"):
        generate_htc(10, 0, 1, seed=1)


def test_htc_offered_load(htc50k: Workload) -> None:
    j = htc50k.jobs
    offered = float(j["run_s"].sum()) / (htc50k.machine.total_cores * j["submit_s"][-1])
    # SE of the estimate ~1% (run-time mean and event count); the bound allows 10%.
    assert abs(offered - 0.9) < 0.09
    for load in (0.5, 1.2):
        w = generate_htc(50_000, 50, 8, seed=7, load=load)
        offered = float(w.jobs["run_s"].sum()) / (400 * w.jobs["submit_s"][-1])
        assert abs(offered / load - 1.0) < 0.1


def test_htc_lognormal_run_times(htc50k: Workload) -> None:
    runs = htc50k.jobs["run_s"]
    # CV ~ 1.9: SE of the mean ~ 0.85 %.
    assert abs(runs.mean() / 600.0 - 1.0) < 0.05
    # median = mean * exp(-sigma^2 / 2) with sigma = 1.2
    assert abs(np.median(runs) / (600.0 * math.exp(-0.72)) - 1.0) < 0.05


def test_htc_bags_of_tasks(htc50k: Workload) -> None:
    j = htc50k.jobs
    in_bag = j["executable_id"] > 0
    # ~1,250 bags of geometric size (mean 20): SE of the job fraction ~ 0.015.
    assert abs(in_bag.mean() - 0.5) < 0.06
    bags = j[in_bag]
    # Bags are numbered in submission order and their jobs are contiguous.
    assert np.all(np.diff(bags["executable_id"]) >= 0)
    _, start, counts = np.unique(bags["executable_id"], return_index=True, return_counts=True)
    assert np.all(counts >= 2)
    assert abs(counts.mean() - 20.0) < 2.0  # SE ~ 0.5
    ends = start + counts - 1
    np.testing.assert_array_equal(bags["job_id"][ends] - bags["job_id"][start], counts - 1)
    for col in ("submit_s", "user_id", "walltime_s"):
        np.testing.assert_array_equal(bags[col], np.repeat(bags[col][start], counts))


def test_htc_no_bags_and_zipf_users() -> None:
    w = generate_htc(50_000, 10, 10, seed=8, bag_fraction=0.0, n_users=50)
    j = w.jobs
    assert np.all(j["executable_id"] == -1)
    counts = np.bincount(j["user_id"], minlength=51)[1:]
    harmonic = np.sum(1.0 / np.arange(1, 51))
    # P(user 1) = 1 / H_50 ~ 0.222; SE ~ 0.0019.
    assert abs(counts[0] / len(w) - 1 / harmonic) < 0.01
    assert abs(counts[0] / counts[1] - 2.0) < 0.15  # Zipf exponent 1


def test_htc_walltime_overestimate(htc50k: Workload) -> None:
    j = htc50k.jobs
    ratio = j["walltime_s"] / j["run_s"]
    assert np.all(ratio >= 1.0)
    singles = j["executable_id"] == -1
    # factor uniform on [1.5, 4] and rounding up by < 300 s
    slack = (j["walltime_s"] - 4.0 * j["run_s"])[singles]
    assert np.all(slack < WALLTIME_GRANULARITY_S)
    assert np.all(j["walltime_s"][singles] >= 1.5 * j["run_s"][singles])
