"""Synthetic rigid parallel jobs from the Lublin & Feitelson workload model.

Reference: U. Lublin and D. G. Feitelson, "The workload on parallel supercomputers:
modeling the characteristics of rigid jobs", *Journal of Parallel and Distributed
Computing* 63(11):1105-1122, 2003. The constants below are those of the authors'
reference implementation ``m_lublin99.c`` (Parallel Workloads Archive), which the
paper's tables summarise; this module re-implements the same model with vectorised
NumPy rather than translating the C program line by line.

The model draws three independent-looking but correlated attributes per job:

Size (number of processors)
    With probability ``serial_prob`` a job is serial (1 processor). Otherwise a value
    ``x`` is drawn from a *two-stage uniform* distribution on the log2 scale: with
    probability ``u_prob`` uniform on ``[u_low, u_med]``, else uniform on
    ``[u_med, u_hi]``. With probability ``pow2_prob`` (unconditional, as in the C code:
    a single uniform ``u`` decides serial if ``u <= serial_prob``, power of two if
    ``u <= serial_prob + pow2_prob``, other sizes otherwise) ``x`` is rounded to an
    integer, so the size is ``2**round(x)``; otherwise the size is ``round(2**x)``.

Run time
    ``ln(run time)`` follows a *hyper-gamma* distribution: with probability ``p`` a
    gamma with shape ``a1`` and scale ``b1`` (short jobs), else a gamma with shape
    ``a2`` and scale ``b2`` (long jobs). ``p = pa * size + pb`` clipped to ``[0, 1]``;
    ``pa < 0``, so bigger jobs tend to run longer. Draws with ``ln(run) >
    MAX_LOG_RUNTIME`` are rejected and redrawn (the C code's ``TOO_MUCH_TIME``). The
    run time in seconds is ``floor(exp(ln run))``, which is at least 1 s because a
    gamma variate is non-negative.

Arrivals
    ``ln(inter-arrival time)`` follows a gamma with shape ``aarr * arar`` and scale
    ``barr``, the rush-hour fit ``(aarr, barr)`` widened by ``arar`` (Arrive-Rush-All
    Ratio) so it describes all hours; draws above ``MAX_LOG_INTERARRIVAL`` are
    redrawn. The daily cycle warps time: the day is cut into 48 half-hour buckets and
    bucket ``k`` gets a weight proportional to the gamma(``anum``, ``bnum``)
    probability of the interval ``[i - 0.5, i + 0.5]`` with ``i`` running over
    ``CYCLIC_DAY_START .. CYCLIC_DAY_START + 47`` and ``k = (i - 1) mod 48`` (the gamma
    is fitted to a day that starts in the early morning, then wrapped back onto
    midnight-based buckets). The weights are normalised to mean 1. An inter-arrival
    time of ``s`` seconds is worth ``s / 1800`` "points"; crossing bucket ``k`` costs
    ``weight[k]`` points, so busy buckets are crossed slowly and receive
    proportionally more arrivals. The C program walks bucket by bucket; here the
    cumulative points of all arrivals are mapped back to seconds at once through the
    inverse of the piecewise-linear cumulative weight function, which is the same
    mapping (and keeps fractional seconds until the end instead of truncating each
    step). Long-run, the share of arrivals in bucket ``k`` is ``weight[k] / 48``.

Model variants (``job_types=``): ``"batch"`` (default) uses the batch-job parameters;
``"interactive"`` the interactive-job ones; ``"typeless"`` the fit to the whole
sample without a job type; ``"mixed"`` runs a batch stream and an interactive stream
independently and merges them by arrival time, as the C program does with
``INCLUDE_JOBS_TYPE``. The type is recorded in ``queue_id`` (1 batch, 0 interactive,
the C program's SWF field 15); ``"typeless"`` jobs are recorded as batch.

Conventions of this implementation (not part of the model):

- Machine size. The parameters were fitted for a 128-node machine (``u_hi = 7``).
  For ``n_procs`` processors the size distribution is shifted on the log2 scale:
  ``u_hi`` and ``u_med`` move by ``log2(n_procs) - 7`` and ``u_low`` stays (the C
  comments' advice: ``u_hi`` = log2 of the system size, ``u_med`` a fixed distance
  below it). On very small machines ``u_low`` is lowered to ``u_hi`` and ``u_med``
  moved to the middle of ``[u_low, u_hi]`` when it would fall below ``u_low``.
  Power-of-two sizes are capped at the largest power of two that fits and all sizes
  are clipped to ``[1, n_procs]``. ``pa`` is applied to the raw size, as in the C
  code, so on machines much larger than 128 nodes the biggest jobs all use the long
  gamma.
- Time origin. Time 0 is ``start_hour``:00 and the first job arrives then; every
  later job follows its predecessor (of the same stream) by one model inter-arrival
  time. In ``"mixed"`` mode the batch stream has the job at 0 and the interactive
  stream's first job arrives one interactive inter-arrival time later. Submit times
  are the arrival times floored to whole seconds.
- Load. By default the model's own arrival rate is kept. ``load=`` rescales all
  inter-arrival times by one factor (equivalently, shifts the log inter-arrival
  gamma by a constant) so that the offered load ``sum(run * size) / (n_procs *
  last submit)`` equals the target; the daily cycle is unchanged.
- Requested time. The model has none. ``estimate="exact"`` requests the run time.
  ``estimate="rounded"`` (default) follows common practice: an over-estimate
  ``run * f`` with ``f`` uniform on ``[1, estimate_factor]`` (the "f-model" of
  Mu'alem & Feitelson, IEEE TPDS 12(6), 2001), rounded up to the next "round" value
  a user would type (``ROUND_ESTIMATES_S``: 1, 2, 5, 10, 15, 20, 30, 45 minutes,
  1, 1.5, 2, 3, 4, 6, 8, 10, 12, 18, 24 hours, then 1.5, 2, 3, 4, 5, 6, 7 days, then
  whole days), in the spirit of Tsafrir, Etsion & Feitelson's observation that
  estimates are a few modal round values (JSSPP 2005). Walltime >= run time always.
- Users. The model has none. Each job's ``user_id`` is drawn independently from a
  Zipf-like law over ``n_users`` users: user ``k`` (1-based) with probability
  proportional to ``k ** -zipf_exponent``, so user 1 submits most. Users are
  independent of the job's size and run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from htcsim.model import Machine, Workload, empty_jobs
from htcsim.workload.users import zipf_user_ids

# ----------------------------------------------------------------------------
# Constants of the model (m_lublin99.c)
# ----------------------------------------------------------------------------

MAX_LOG_RUNTIME = 12.0
"""``TOO_MUCH_TIME``: ln of the longest run time; exp(12) s is about 45 hours."""

MAX_LOG_INTERARRIVAL = 13.0
"""``TOO_MUCH_ARRIVE_TIME``: ln of the longest inter-arrival time; exp(13) s ~ 5 days."""

BUCKETS_PER_DAY = 48
"""Time-of-day resolution of the arrival cycle: 48 half-hour buckets."""

SECONDS_PER_BUCKET = 86_400 // BUCKETS_PER_DAY
"""1800 s; an inter-arrival time of s seconds is worth s / 1800 points."""

CYCLIC_DAY_START = 11
"""The daily-cycle gamma is evaluated on buckets 11..58 and wrapped onto 0..47."""

REFERENCE_LOG2_PROCS = 7.0
"""log2 of the machine the parameters were fitted for (128 nodes)."""


@dataclass(frozen=True)
class LublinParams:
    """One parameter set of the model (one job type); see the module docstring.

    ``serial_prob``: probability of a serial job. ``pow2_prob``: probability of a
    parallel job with a power-of-two size (unconditional). ``u_low``, ``u_med``,
    ``u_hi``, ``u_prob``: the two-stage uniform on log2(size) (for a 128-node
    machine). ``a1, b1, a2, b2``: shape and scale of the two gammas of ln(run time);
    ``pa, pb``: ``p = pa * size + pb``. ``aarr, barr``: rush-hour gamma of
    ln(inter-arrival time); ``arar``: factor on ``aarr`` for all hours; ``anum,
    bnum``: gamma giving the daily cycle of arrivals.
    """

    serial_prob: float
    pow2_prob: float
    u_low: float
    u_med: float
    u_hi: float
    u_prob: float
    a1: float
    b1: float
    a2: float
    b2: float
    pa: float
    pb: float
    aarr: float
    barr: float
    anum: float
    bnum: float
    arar: float


BATCH = LublinParams(
    serial_prob=0.2927,
    pow2_prob=0.6686,
    u_low=1.2,  # smallest parallel batch job: 2 nodes
    u_med=5.0,
    u_hi=7.0,  # biggest batch job: 128 nodes
    u_prob=0.875,
    a1=6.57,
    b1=0.823,
    a2=639.1,
    b2=0.0156,
    pa=-0.003,
    pb=0.6986,
    aarr=6.0415,
    barr=0.8531,
    anum=6.1271,
    bnum=5.2740,
    arar=1.0519,
)
"""Batch jobs (``*_BATCH`` constants of m_lublin99.c)."""

INTERACTIVE = LublinParams(
    serial_prob=0.1541,
    pow2_prob=0.625,
    u_low=1.0,  # smallest interactive parallel job: 2 nodes
    u_med=3.0,
    u_hi=5.5,  # biggest interactive job: 45 nodes on a 128-node machine
    u_prob=0.705,
    a1=3.8351,
    b1=0.6605,
    a2=7.073,
    b2=0.6856,
    pa=-0.0118,
    pb=0.9156,
    aarr=6.5510,
    barr=0.6621,
    anum=8.9186,
    bnum=3.6680,
    arar=0.9797,
)
"""Interactive jobs (``*_ACTIVE`` constants of m_lublin99.c)."""

TYPELESS = LublinParams(
    serial_prob=0.244,
    pow2_prob=0.576,
    u_low=0.8,
    u_med=4.5,
    u_hi=7.0,
    u_prob=0.86,
    a1=4.2,
    b1=0.94,
    a2=312.0,
    b2=0.03,
    pa=-0.0054,
    pb=0.78,
    aarr=10.2303,
    barr=0.4871,
    anum=8.1737,
    bnum=3.9631,
    arar=1.0225,
)
"""Whole sample without job types (the C program with ``INCLUDE_JOBS_TYPE`` 0)."""

BATCH_QUEUE = 1
INTERACTIVE_QUEUE = 0

_ROUND_ESTIMATES_MIN: tuple[int, ...] = (
    1,
    2,
    5,
    10,
    15,
    20,
    30,
    45,
    60,
    90,
    120,
    180,
    240,
    360,
    480,
    600,
    720,
)
_ROUND_ESTIMATES_MIN += (1080, 1440, 2160, 2880, 4320, 5760, 7200, 8640, 10080)
ROUND_ESTIMATES_S = np.array(_ROUND_ESTIMATES_MIN, dtype=np.int64) * 60
"""Requested times a user would type, in seconds (beyond the last: whole days)."""

JobKind = Literal["batch", "interactive", "typeless", "mixed"]
EstimateKind = Literal["exact", "rounded"]


# ----------------------------------------------------------------------------
# Pieces of the model
# ----------------------------------------------------------------------------


def _gamma_cdf(x: float, shape: float, scale: float) -> float:
    """Regularised lower incomplete gamma P(shape, x / scale), by its power series.

    Only used for the 48 daily-cycle weights (x / scale < 20 there), where the series
    converges in a few dozen terms; keeps the package free of a SciPy dependency.
    """
    z = x / scale
    if z <= 0.0:
        return 0.0
    term = 1.0 / shape
    total = term
    k = shape
    for _ in range(10_000):
        k += 1.0
        term *= z / k
        total += term
        if term < total * 1e-16:
            break
    return total * math.exp(-z + shape * math.log(z) - math.lgamma(shape))


def arrival_weights(params: LublinParams = BATCH) -> np.ndarray:
    """The 48 half-hour weights of the daily cycle, mean 1, index 0 = 00:00-00:30.

    Long-run, bucket ``k`` receives the fraction ``weight[k] / 48`` of the arrivals.
    """
    weights = np.empty(BUCKETS_PER_DAY)
    for i in range(CYCLIC_DAY_START, CYCLIC_DAY_START + BUCKETS_PER_DAY):
        weights[(i - 1) % BUCKETS_PER_DAY] = _gamma_cdf(
            i + 0.5, params.anum, params.bnum
        ) - _gamma_cdf(i - 0.5, params.anum, params.bnum)
    return weights / weights.mean()


def _truncated_gamma(
    rng: np.random.Generator, shape: float, scale: float, limit: float, n: int
) -> np.ndarray:
    """Gamma(shape, scale) variates redrawn while above ``limit`` (rejection)."""
    values = rng.gamma(shape, scale, n)
    bad = np.flatnonzero(values > limit)
    while bad.size:
        values[bad] = rng.gamma(shape, scale, bad.size)
        bad = bad[values[bad] > limit]
    return values


def _size_bounds(params: LublinParams, n_procs: int) -> tuple[float, float, float]:
    """(u_low, u_med, u_hi) of the two-stage uniform, shifted to an n_procs machine."""
    shift = math.log2(n_procs) - REFERENCE_LOG2_PROCS
    hi = max(params.u_hi + shift, 0.0)
    low = min(params.u_low, hi)
    med = params.u_med + shift
    if med <= low:
        med = (low + hi) / 2.0
    return low, min(med, hi), hi


def _sizes(rng: np.random.Generator, n: int, params: LublinParams, n_procs: int) -> np.ndarray:
    """Processor counts: serial, power-of-two or other, from one uniform as in the C code."""
    low, med, hi = _size_bounds(params, n_procs)
    u = rng.random(n)
    first_stage = rng.random(n) <= params.u_prob
    x = np.where(
        first_stage,
        low + rng.random(n) * (med - low),
        med + rng.random(n) * (hi - med),
    )
    serial = u <= params.serial_prob
    pow2 = ~serial & (u <= params.serial_prob + params.pow2_prob)
    max_exponent = n_procs.bit_length() - 1  # largest power of two <= n_procs
    pow2_size = np.exp2(np.minimum(np.floor(x + 0.5), max_exponent))
    other_size = np.floor(np.exp2(x) + 0.5)
    sizes = np.where(serial, 1.0, np.where(pow2, pow2_size, other_size))
    return np.clip(sizes, 1, n_procs).astype(np.int64)


def _log_runtimes(rng: np.random.Generator, sizes: np.ndarray, params: LublinParams) -> np.ndarray:
    """ln(run time) from the hyper-gamma with p = pa * size + pb, truncated (redrawn)."""
    p = np.clip(params.pa * sizes + params.pb, 0.0, 1.0)
    values = np.empty(sizes.shape[0])
    todo = np.arange(sizes.shape[0])
    while todo.size:
        short = rng.random(todo.size) <= p[todo]
        n_short = int(np.count_nonzero(short))
        drawn = np.empty(todo.size)
        drawn[short] = rng.gamma(params.a1, params.b1, n_short)
        drawn[~short] = rng.gamma(params.a2, params.b2, todo.size - n_short)
        values[todo] = drawn
        todo = todo[drawn > MAX_LOG_RUNTIME]
    return values


def _arrival_points(
    rng: np.random.Generator, n: int, params: LublinParams, first_at_zero: bool
) -> np.ndarray:
    """Cumulative arrival positions in points (1 point = one average half hour)."""
    shape = params.aarr * params.arar
    log_gaps_s = _truncated_gamma(rng, shape, params.barr, MAX_LOG_INTERARRIVAL, n)
    gaps = np.exp(log_gaps_s) / SECONDS_PER_BUCKET
    if first_at_zero and n:
        gaps[0] = 0.0
    return np.cumsum(gaps)


def _points_to_seconds(points: np.ndarray, weights: np.ndarray, start_bucket: int) -> np.ndarray:
    """Invert the cumulative weight function: time (s) at which ``points`` are spent."""
    w = np.roll(weights, -start_bucket)  # w[0]: the bucket at time 0
    cum = np.concatenate(([0.0], np.cumsum(w)))
    per_day = cum[-1]
    days = np.floor(points / per_day)
    rest = points - days * per_day
    bucket = np.minimum(np.searchsorted(cum, rest, side="right") - 1, BUCKETS_PER_DAY - 1)
    frac = (rest - cum[bucket]) / w[bucket]
    return (days * BUCKETS_PER_DAY + bucket + frac) * SECONDS_PER_BUCKET


def _user_estimates(
    rng: np.random.Generator, run_s: np.ndarray, estimate_factor: float
) -> np.ndarray:
    """Over-estimate by a uniform factor in [1, f], round up to a user-like value."""
    wanted = np.ceil(run_s * (1.0 + rng.random(run_s.shape[0]) * (estimate_factor - 1.0)))
    idx = np.searchsorted(ROUND_ESTIMATES_S, wanted, side="left")
    beyond = idx >= ROUND_ESTIMATES_S.shape[0]
    rounded = ROUND_ESTIMATES_S[np.minimum(idx, ROUND_ESTIMATES_S.shape[0] - 1)]
    whole_days = np.ceil(wanted / 86_400.0).astype(np.int64) * 86_400
    return np.where(beyond, whole_days, rounded)


def _stream(
    rng: np.random.Generator,
    n: int,
    params: LublinParams,
    n_procs: int,
    first_at_zero: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrival points, sizes and run times (s) of ``n`` jobs of one type."""
    points = _arrival_points(rng, n, params, first_at_zero)
    sizes = _sizes(rng, n, params, n_procs)
    run_s = np.floor(np.exp(_log_runtimes(rng, sizes, params))).astype(np.int64)
    return points, sizes, run_s


# ----------------------------------------------------------------------------
# Public generator
# ----------------------------------------------------------------------------


def generate_lublin(
    n_jobs: int,
    n_procs: int,
    *,
    seed: int,
    start_hour: int = 0,
    job_types: JobKind = "batch",
    load: float | None = None,
    estimate: EstimateKind = "rounded",
    estimate_factor: float = 3.0,
    n_users: int = 100,
    zipf_exponent: float = 1.0,
) -> Workload:
    """``n_jobs`` jobs of the Lublin & Feitelson (2003) model on ``n_procs`` processors.

    ``seed`` fixes every draw (``numpy.random.default_rng``): the same arguments give
    byte-identical jobs. ``start_hour`` (0-23) is the time of day at time 0.
    ``job_types`` picks the parameter set (``"batch"``, ``"interactive"``, ``"typeless"`` or
    ``"mixed"``); ``load``, when given, rescales inter-arrival times to that offered
    load; ``estimate`` chooses the requested time (``"exact"`` or ``"rounded"`` with
    over-estimation factors uniform on ``[1, estimate_factor]``); users are Zipf over
    ``n_users`` with ``zipf_exponent``. See the module docstring for the model and
    every convention.
    """
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0, got {n_jobs}")
    if n_procs < 1:
        raise ValueError(f"n_procs must be >= 1, got {n_procs}")
    if not 0 <= start_hour <= 23:
        raise ValueError(f"start_hour must be in 0..23, got {start_hour}")
    if job_types not in ("batch", "interactive", "typeless", "mixed"):
        raise ValueError(
            f"job_types must be batch, interactive, typeless or mixed, got {job_types!r}"
        )
    if load is not None and not load > 0:
        raise ValueError(f"load must be positive, got {load}")
    if estimate not in ("exact", "rounded"):
        raise ValueError(f"estimate must be 'exact' or 'rounded', got {estimate!r}")
    if estimate_factor < 1.0:
        raise ValueError(f"estimate_factor must be >= 1, got {estimate_factor}")

    rng = np.random.default_rng(seed)
    start_bucket = start_hour * BUCKETS_PER_DAY // 24

    if job_types == "mixed":
        streams = [(BATCH, BATCH_QUEUE, True), (INTERACTIVE, INTERACTIVE_QUEUE, False)]
    else:
        params = {"batch": BATCH, "interactive": INTERACTIVE, "typeless": TYPELESS}[job_types]
        queue = INTERACTIVE_QUEUE if job_types == "interactive" else BATCH_QUEUE
        streams = [(params, queue, True)]

    points_l, weights_l, sizes_l, runs_l, queues_l = [], [], [], [], []
    for params, queue, first_at_zero in streams:
        points, sizes, run_s = _stream(rng, n_jobs, params, n_procs, first_at_zero)
        points_l.append(points)
        weights_l.append(arrival_weights(params))
        sizes_l.append(sizes)
        runs_l.append(run_s)
        queues_l.append(np.full(n_jobs, queue, dtype=np.int32))

    def times_at(scale: float) -> np.ndarray:
        pairs = zip(points_l, weights_l, strict=True)
        return np.concatenate([_points_to_seconds(p * scale, w, start_bucket) for p, w in pairs])

    all_sizes = np.concatenate(sizes_l)
    all_runs = np.concatenate(runs_l)
    # Merge the streams by arrival time (stable: batch first on ties) and keep n_jobs.
    times = times_at(1.0)
    order = np.argsort(times, kind="stable")[:n_jobs]
    if load is not None and n_jobs > 1:
        # One factor on every inter-arrival time; the span grows monotonically and almost
        # linearly with it, so a few fixed-point steps reach the target.
        scale = 1.0
        for _ in range(8):
            work = float(np.dot(all_sizes[order].astype(np.float64), all_runs[order]))
            span = float(times[order[-1]])
            if span <= 0.0:
                break
            ratio = work / (n_procs * load) / span
            scale *= ratio
            times = times_at(scale)
            order = np.argsort(times, kind="stable")[:n_jobs]
            if abs(ratio - 1.0) < 1e-9:
                break
    submit_s = np.floor(times[order]).astype(np.int64)
    sizes = all_sizes[order]
    run_s = all_runs[order]
    queues = np.concatenate(queues_l)[order]

    user_id = zipf_user_ids(rng, n_jobs, n_users, zipf_exponent)
    if estimate == "exact":
        walltime_s = run_s.copy()
    else:
        walltime_s = _user_estimates(rng, run_s, estimate_factor)

    table = empty_jobs(n_jobs, cores_per_task=1, status=1)
    table["job_id"] = np.arange(1, n_jobs + 1)
    table["submit_s"] = submit_s
    table["run_s"] = run_s
    table["walltime_s"] = walltime_s
    table["n_tasks"] = sizes
    table["user_id"] = user_id
    table["queue_id"] = queues

    header = {
        "Generator": "htcsim.workload.lublin: Lublin & Feitelson, JPDC 63(11), 2003",
        "Model": job_types,
        "Seed": str(seed),
        "StartHour": str(start_hour),
        "Estimate": estimate,
        "MaxJobs": str(n_jobs),
        "MaxProcs": str(n_procs),
        "MaxNodes": str(n_procs),
    }
    if load is not None:
        header["TargetLoad"] = str(load)
    return Workload(
        name=f"lublin-{n_procs}-seed{seed}",
        jobs=table,
        machine=Machine(n_nodes=n_procs, cores_per_node=1),
        header=header,
    )
