"""Synthetic high-throughput-computing (HTC) workloads: many one-core jobs, many users.

Not a published model: a deliberately simple, documented generator for million-job
runs of a one-task-per-job cluster (HTCondor-style pools, grid sites), built from the
usual ingredients of the workload-modelling literature (D. G. Feitelson, *Workload
Modeling for Computer Systems Performance Evaluation*, Cambridge University Press,
2015: Poisson arrivals, log-normal service times, Zipf-distributed user activity,
bags of tasks as in Iosup et al., "The characteristics and performance of groups of
jobs in grids", Euro-Par 2007).

Every job is one task of one core (``n_tasks = 1``, ``cores_per_task = 1``), so it
always fits on one node.

Arrivals
    Submission *events* form a Poisson process. An event is either one job or a
    "bag of tasks": one user submitting ``k >= 2`` jobs in the same second with the
    same requested walltime and the same ``executable_id`` (the bag's number). Bag
    sizes are ``1 + Geometric(1 / (mean_bag_size - 1))`` (mean ``mean_bag_size``,
    a long right tail); the probability that an event is a bag is set so that the
    expected fraction of *jobs* that belong to bags is ``bag_fraction``. The event
    rate is chosen so that the job arrival rate ``lambda`` gives the offered load
    ``load = lambda * mean_run_s / total_cores``. The first event is at time 0 and
    submit times are floored to whole seconds. (The last event is cut short so that
    exactly ``n_jobs`` jobs are produced.)

Run times
    Log-normal with mean ``mean_run_s`` and log-scale standard deviation
    ``run_sigma`` (default 1.2: median ``mean * exp(-sigma**2 / 2)``, about half the
    mean, and a coefficient of variation ``sqrt(exp(sigma**2) - 1)`` of about 1.9),
    rounded to whole seconds, at least 1 s. Jobs of a bag draw their run times
    independently (same program, different inputs).

Requested walltime
    Users over-estimate: the walltime is ``run * f`` rounded up to a multiple of 5
    minutes, with ``f`` uniform on ``walltime_factor`` (default 1.5 to 4). For a bag,
    one ``f`` applies to the longest run time of the bag, so all its jobs ask for the
    same walltime, and every job's walltime is still >= its run time.

Users
    Each event's user is drawn from a Zipf law over ``n_users`` users: user ``k``
    (1-based) with probability proportional to ``k ** -zipf_exponent`` (default 1),
    so a few heavy users submit much of the work, as in real pools.
"""

from __future__ import annotations

import numpy as np

from htcsim.model import Machine, Workload, empty_jobs
from htcsim.workload.users import zipf_user_ids

WALLTIME_GRANULARITY_S = 300
"""Requested walltimes are rounded up to whole 5-minute steps."""


def generate_htc(
    n_jobs: int,
    n_nodes: int,
    cores_per_node: int,
    *,
    seed: int,
    n_users: int = 200,
    load: float = 0.9,
    mean_run_s: float = 600.0,
    run_sigma: float = 1.2,
    bag_fraction: float = 0.5,
    mean_bag_size: float = 20.0,
    walltime_factor: tuple[float, float] = (1.5, 4.0),
    zipf_exponent: float = 1.0,
) -> Workload:
    """``n_jobs`` one-core jobs offering ``load`` on ``n_nodes`` x ``cores_per_node`` cores.

    ``seed`` fixes every draw (``numpy.random.default_rng``): the same arguments give
    byte-identical jobs. See the module docstring for the model and each parameter.
    """
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0, got {n_jobs}")
    machine = Machine(n_nodes=n_nodes, cores_per_node=cores_per_node)
    if not load > 0:
        raise ValueError(f"load must be positive, got {load}")
    if not mean_run_s >= 1.0:
        raise ValueError(f"mean_run_s must be at least 1 s, got {mean_run_s}")
    if run_sigma < 0:
        raise ValueError(f"run_sigma must be >= 0, got {run_sigma}")
    if not 0.0 <= bag_fraction <= 1.0:
        raise ValueError(f"bag_fraction must be in [0, 1], got {bag_fraction}")
    if not mean_bag_size >= 2.0:
        raise ValueError(f"mean_bag_size must be >= 2, got {mean_bag_size}")
    f_low, f_high = walltime_factor
    if not 1.0 <= f_low <= f_high:
        raise ValueError(f"walltime_factor must satisfy 1 <= low <= high, got {walltime_factor}")

    rng = np.random.default_rng(seed)

    # Events: a bag with probability q, chosen so that a fraction bag_fraction of the
    # jobs are in bags: q*m / (q*m + 1 - q) = bag_fraction.
    m = mean_bag_size
    q = bag_fraction / (m * (1.0 - bag_fraction) + bag_fraction)
    mean_event_size = q * m + (1.0 - q)
    # At most n_jobs events (each has >= 1 job); draw that many, keep what is needed.
    is_bag = rng.random(n_jobs) < q
    bag_sizes = 1 + rng.geometric(1.0 / (m - 1.0), n_jobs)
    event_sizes = np.where(is_bag, bag_sizes, 1).astype(np.int64)
    ends = np.cumsum(event_sizes)
    n_events = int(np.searchsorted(ends, n_jobs, side="left")) + 1 if n_jobs else 0
    event_sizes = event_sizes[:n_events]
    if n_events:
        event_sizes[-1] -= ends[n_events - 1] - n_jobs
    event_of_job = np.repeat(np.arange(n_events), event_sizes)
    starts = np.concatenate(([0], np.cumsum(event_sizes)[:-1])) if n_events else event_sizes

    # Poisson events at the rate that makes the job arrival rate give the target load.
    job_rate = load * machine.total_cores / mean_run_s
    event_rate = job_rate / mean_event_size
    gaps = rng.exponential(1.0 / event_rate, n_events)
    if n_events:
        gaps[0] = 0.0
    event_submit = np.floor(np.cumsum(gaps)).astype(np.int64)

    # Log-normal run times with the requested mean.
    mu = np.log(mean_run_s) - run_sigma**2 / 2.0
    run_s = np.maximum(np.rint(rng.lognormal(mu, run_sigma, n_jobs)), 1).astype(np.int64)

    # One over-estimation factor per event, applied to the event's longest run.
    factor = f_low + rng.random(n_events) * (f_high - f_low)
    longest = np.maximum.reduceat(run_s, starts) if n_events else run_s
    event_walltime = (
        np.ceil(longest * factor / WALLTIME_GRANULARITY_S).astype(np.int64) * WALLTIME_GRANULARITY_S
    )

    event_user = zipf_user_ids(rng, n_events, n_users, zipf_exponent)
    bag_number = np.where(event_sizes >= 2, np.cumsum(event_sizes >= 2), -1).astype(np.int32)

    table = empty_jobs(n_jobs, n_tasks=1, cores_per_task=1, status=1)
    table["job_id"] = np.arange(1, n_jobs + 1)
    table["submit_s"] = event_submit[event_of_job]
    table["run_s"] = run_s
    table["walltime_s"] = event_walltime[event_of_job]
    table["user_id"] = event_user[event_of_job]
    table["executable_id"] = bag_number[event_of_job]

    header = {
        "Generator": "htcsim.workload.htc: Poisson bags of one-core tasks",
        "Seed": str(seed),
        "TargetLoad": str(load),
        "MeanRunTime": str(mean_run_s),
        "MaxJobs": str(n_jobs),
        "MaxProcs": str(machine.total_cores),
        "MaxNodes": str(n_nodes),
    }
    return Workload(
        name=f"htc-{n_nodes}x{cores_per_node}-seed{seed}",
        jobs=table,
        machine=machine,
        header=header,
    )
