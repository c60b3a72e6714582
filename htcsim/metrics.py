"""Metrics of a simulated schedule: one definition used by the CLI, the tests and experiments.

Every figure here follows the conventions of docs/architecture.md (and so of the
job-scheduling literature: Feitelson, Rudolph & Schwiegelshohn, "Parallel job
scheduling -- a status report", JSSPP 2004), so a table produced by htcsim can
be set beside a published one. All computations are vectorised over the job
columns; nothing loops per job in Python.

Which jobs count (a replay that ran to completion has every job started,
and every job that a node failure did not end finished):

* *started*: the job ran at all (its first start ``>= 0``). Waits are known
  for these jobs only; the wait ends at the *first* start.
* *ended*: started and its last run ended (``end_s >= 0``).
* *finished*: ended on its own, not by a node failure (those are *failed*).
  Slowdowns and responses are known for these jobs only.

A job a node failure requeued ran more than once (its run segments, see
``htcsim.segments``): its cores were busy during every run, the run a
failure threw away included, so utilization and the time series count
every run; its wait is to its first start, and the time queued again
between runs is its ``requeue_wait_s``.

Worked example (a 4-core machine; times in seconds)::

    job  submit start end  cores   wait run  bsld = max((wait+run)/max(run,10), 1)
    A      0      0   100    4       0  100   1.0
    B     10    100   105    2      90    5   9.5    (run < 10 s: divided by 10)
    C     20    100   120    2      80   20   5.0

    mean wait 56.67 s, makespan 120 - 0 = 120 s,
    utilization (100*4 + 5*2 + 20*2) / (4 * 120) = 450 / 480 = 0.9375
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import polars as pl

from htcsim.schedule import (
    SECONDS_PER_HOUR,
    ScheduleColumns,
    SimResult,
    schedule_columns,
)
from htcsim.segments import FINAL_STATES

TAU_S = 10.0
"""Bounded-slowdown threshold: runs shorter than this count as this long (literature: 10 s)."""

SECONDS_PER_DAY = 86_400.0

Summary = dict[str, float | int]


# --------------------------------------------------------------------------- per job


def bounded_slowdown(
    wait: np.ndarray | float, run: np.ndarray | float, tau: float = TAU_S
) -> np.ndarray:
    """``max((wait + run) / max(run, tau), 1)``, element-wise.

    Plain slowdown ``(wait + run) / run`` is dominated by very short jobs (a 1 s
    job that waits a minute has slowdown 61) and is undefined for run 0; bounding
    the denominator at ``tau`` (10 s in the literature) and the result at 1 keeps
    it meaningful for every job, including those that start and end at once.
    """
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    wait_f = np.asarray(wait, dtype=np.float64)
    run_f = np.asarray(run, dtype=np.float64)
    return np.maximum((wait_f + run_f) / np.maximum(run_f, tau), 1.0)


def per_job_table(result: SimResult) -> pl.DataFrame:
    """One row per job, in workload order: the schedule joined with the request.

    Columns: ``job_id, user_id, group_id, submit_s``, ``start_s`` and ``end_s``
    (the job's last run), ``wait_s`` (submit to *first* start), ``run_s`` (time
    the job held its cores, over all its runs), ``walltime_s`` (requested),
    ``n_tasks``, ``cores`` (``n_tasks * cores_per_task``), ``bounded_slowdown``
    (tau = 10 s, over the run the job needed: ``run_s`` less the lost run),
    ``killed_at_walltime`` (the recorded run exceeded the request and the job
    ran, so the replay cut it), ``recorded_wait_s`` (the wait in the source
    log), then ``first_start_s``, ``requeue_wait_s`` (queued again between
    runs), ``requeues``, ``lost_core_s`` and ``saved_core_s`` (run thrown away
    by node failures, and kept by checkpoints, times cores) and
    ``final_state`` (:data:`htcsim.segments.FINAL_STATES`). Unknown values
    (not started, not ended, not logged) are null rather than -1, so that
    aggregations in polars skip them instead of averaging a sentinel.
    """
    s = schedule_columns(result)
    jobs = result.workload.jobs
    n = len(jobs)
    killed = np.asarray(result.killed_at_walltime, dtype=bool) & s.finished
    lost = s.lost_s if result.lost_s is None else np.asarray(result.lost_s, dtype=np.int64)
    saved = np.zeros(n, np.int64) if result.saved_s is None else np.asarray(result.saved_s)
    requeues = np.zeros(n, np.int64) if result.requeues is None else np.asarray(result.requeues)
    frame = pl.DataFrame(
        {
            "job_id": s.job_id,
            "user_id": jobs["user_id"],
            "group_id": jobs["group_id"],
            "submit_s": s.submit_s,
            "start_s": s.start_s,
            "end_s": s.end_s,
            "wait_s": s.first_start_s - s.submit_s,
            "run_s": s.run_s,
            "walltime_s": jobs["walltime_s"].astype(np.int64),
            "n_tasks": jobs["n_tasks"],
            "cores": s.cores,
            "bounded_slowdown": _slowdowns(s),
            "killed_at_walltime": killed,
            "recorded_wait_s": jobs["recorded_wait_s"].astype(np.int64),
            "first_start_s": s.first_start_s,
            "requeue_wait_s": s.segments.requeue_wait_s(n),
            "requeues": requeues.astype(np.int64),
            "lost_core_s": lost * s.cores,
            "saved_core_s": saved.astype(np.int64) * s.cores,
            "final_state": pl.Series(
                np.asarray(FINAL_STATES)[final_states(result, s)], dtype=pl.String
            ).cast(pl.Enum(FINAL_STATES)),
            "_started": s.started,
            "_ended": s.ended,
            "_finished": s.finished,
        }
    )
    started, ended, finished = pl.col("_started"), pl.col("_ended"), pl.col("_finished")
    when_started = ("start_s", "wait_s", "first_start_s", "requeue_wait_s")
    return frame.with_columns(
        *(pl.when(started).then(pl.col(c)).alias(c) for c in when_started),
        *(pl.when(ended).then(pl.col(c)).alias(c) for c in ("end_s", "run_s")),
        pl.when(finished).then(pl.col("bounded_slowdown")).alias("bounded_slowdown"),
        pl.when(pl.col("recorded_wait_s") >= 0)
        .then(pl.col("recorded_wait_s"))
        .alias("recorded_wait_s"),
    ).drop("_started", "_ended", "_finished")


def final_states(result: SimResult, s: ScheduleColumns | None = None) -> np.ndarray:
    """How each job ended, as an index into :data:`htcsim.segments.FINAL_STATES`."""
    s = schedule_columns(result) if s is None else s
    state = np.full(len(s.job_id), FINAL_STATES.index("pending"), dtype=np.int8)
    state[s.started & ~s.ended] = FINAL_STATES.index("running")
    state[s.finished] = FINAL_STATES.index("completed")
    state[s.finished & np.asarray(result.killed_at_walltime, dtype=bool)] = FINAL_STATES.index(
        "timeout"
    )
    state[s.failed] = FINAL_STATES.index("failed")
    if result.cancelled is not None:
        state[np.asarray(result.cancelled, dtype=bool)] = FINAL_STATES.index("cancelled")
    return state


def _slowdowns(s: ScheduleColumns) -> np.ndarray:
    """Bounded slowdown of each ended job: its response (submit to end) over the
    run it needed (the run a failure threw away is not work)."""
    work = s.run_s - s.lost_s
    return bounded_slowdown(s.end_s - s.submit_s - work, work)


# --------------------------------------------------------------------------- whole run


def summarize(result: SimResult) -> Summary:
    """The headline figures of one replay, as plain ``int``/``float`` (JSON-ready).

    With S the started jobs, F the finished ones (ended, not by a node
    failure), ``wait = first start - submit``, ``response = end - submit``,
    ``work`` the run a job needed (its runs, already capped at the requested
    time, less the run failures threw away) and ``cores = n_tasks * cores_per_task``:

    * ``n_jobs``, ``n_started`` = |S|, ``n_finished`` = |F|
    * ``mean_wait_s``, ``median_wait_s``, ``p95_wait_s``, ``max_wait_s``: over S;
      percentiles by linear interpolation between order statistics (NumPy's
      default, as polars' ``quantile(..., "linear")``)
    * ``mean_bsld``, ``median_bsld``: bounded slowdown over F,
      ``max(response / max(work, 10 s), 1)``
    * ``mean_response_s``: mean response over F
    * ``makespan_s = max(end over ended jobs) - min(submit over all jobs)``
    * ``utilization = busy core-seconds / (total_cores * makespan_s)``, the
      busy core-seconds summed over every run of every job (``run * cores``),
      the runs failures cut short included
    * ``throughput_jobs_per_h = |F| / (makespan_s / 3600)``
    * ``n_killed_at_walltime``: jobs in F whose recorded run exceeded the request
    * ``n_cancelled``: jobs cancelled because a dependency could never be met
    * ``n_requeued``: requeues after node failures; ``lost_core_h``: the core-hours
      those failures threw away (run time since each lost start x cores);
      ``mean_requeue_wait_s``: over the requeued jobs, the time they spent
      queued again between runs (0 when none was requeued)
    * ``n_node_failed``: jobs ended failed because their node failed (no retry
      left, or ``on_node_failure = "fail"``), not in F; ``saved_core_h``:
      core-hours that checkpoints kept from being run again after failures
    * ``node_hours``: the sum over nodes of the time each was provisioned (not
      powered off), from the first submit to the end of the replay; ``cost``:
      the same weighted by each node type's price per hour;
      ``mean_nodes_provisioned = node_hours / span``;
      ``provisioned_utilization = busy core-seconds / provisioned core-seconds``
      (equal to ``utilization`` for a fixed fleet with no failures)
    * ``node_boots``, ``node_shutdowns``: the autoscaler's actions
    * ``replay_s``: wall-clock seconds of the event loop; ``jobs_per_second =
      n_jobs / replay_s``, the replay speed

    An undefined figure (no job started, a zero makespan, an unmeasured replay
    time) is ``nan``, never a misleading 0.
    """
    s = schedule_columns(result)
    wait = (s.first_start_s - s.submit_s)[s.started]
    response = (s.end_s - s.submit_s)[s.finished]
    bsld = _slowdowns(s)[s.finished]
    makespan = _makespan(s)
    busy_core_s = s.segments.busy_core_s(s.cores)
    replay_s = float(result.replay_seconds) if result.replay_seconds > 0 else float("nan")
    n_jobs = int(s.submit_s.size)
    n_finished = int(response.size)
    return {
        "n_jobs": n_jobs,
        "n_started": int(wait.size),
        "n_finished": n_finished,
        "mean_wait_s": _stat(np.mean, wait),
        "median_wait_s": _stat(np.median, wait),
        "p95_wait_s": _stat(lambda a: np.percentile(a, 95), wait),
        "max_wait_s": _stat(np.max, wait),
        "mean_bsld": _stat(np.mean, bsld),
        "median_bsld": _stat(np.median, bsld),
        "mean_response_s": _stat(np.mean, response),
        "makespan_s": makespan,
        "utilization": _ratio(busy_core_s, s.total_cores * makespan),
        "throughput_jobs_per_h": _ratio(n_finished, makespan / SECONDS_PER_HOUR),
        "n_killed_at_walltime": int(
            np.count_nonzero(np.asarray(result.killed_at_walltime, dtype=bool) & s.finished)
        ),
        "n_cancelled": 0 if result.cancelled is None else int(np.count_nonzero(result.cancelled)),
        "n_requeued": 0 if result.requeues is None else int(np.sum(result.requeues)),
        "lost_core_h": 0.0
        if result.lost_s is None
        else float(np.sum(result.lost_s * s.cores)) / SECONDS_PER_HOUR,
        "mean_requeue_wait_s": _requeue_wait(result, s),
        **_failure_figures(result, s),
        **_node_figures(result, busy_core_s),
        "replay_s": replay_s,
        "jobs_per_second": _ratio(n_jobs, replay_s),
    }


def _requeue_wait(result: SimResult, s: ScheduleColumns) -> float:
    """Mean time requeued jobs spent queued again; 0 when none was requeued
    (as ``n_requeued``: a replay without failures reads the same as one
    whose failures hit no job)."""
    if result.requeues is None:
        return 0.0
    requeued = (np.asarray(result.requeues) > 0) & s.started
    if not requeued.any():
        return 0.0
    return float(np.mean(s.segments.requeue_wait_s(len(s.job_id))[requeued]))


def _failure_figures(result: SimResult, s: ScheduleColumns) -> Summary:
    return {
        "n_node_failed": int(np.count_nonzero(s.failed)),
        "saved_core_h": 0.0
        if result.saved_s is None
        else float(np.sum(result.saved_s * s.cores)) / SECONDS_PER_HOUR,
    }


def _node_figures(result: SimResult, busy_core_s: int) -> Summary:
    """Provisioned node time and its cost (see ``node_usage``)."""
    nan = float("nan")
    if result.node_seconds is None or result.pool is None:
        return {
            "node_hours": nan,
            "cost": nan,
            "mean_nodes_provisioned": nan,
            "provisioned_utilization": nan,
            "node_boots": int(result.counters.get("node_boots", 0)),
            "node_shutdowns": int(result.counters.get("node_shutdowns", 0)),
        }
    usage = node_usage(result)
    seconds = np.asarray(result.node_seconds, dtype=np.int64)
    cores = result.pool.capacity()[:, 0]
    # the replay runs from the first submit to the last end (the cost horizon)
    submit = result.workload.jobs["submit_s"]
    span = int(max(result.end_s.max(), submit.max()) - submit.min()) if len(submit) else 0
    node_h = float(usage["node_hours"].sum())
    return {
        "node_hours": node_h,
        "cost": float(usage["cost"].sum()),
        "mean_nodes_provisioned": _ratio(node_h, span / SECONDS_PER_HOUR),
        "provisioned_utilization": _ratio(busy_core_s, float(np.sum(seconds * cores))),
        "node_boots": int(result.counters.get("node_boots", 0)),
        "node_shutdowns": int(result.counters.get("node_shutdowns", 0)),
    }


def node_usage(result: SimResult) -> pl.DataFrame:
    """Per node type: nodes in the pool, node-hours provisioned, price per
    node-hour and cost (node-hours x price)."""
    if result.node_seconds is None or result.pool is None:
        return pl.DataFrame(
            schema={
                "node_type": pl.String(),
                "nodes": pl.Int64(),
                "node_hours": pl.Float64(),
                "price_per_hour": pl.Float64(),
                "cost": pl.Float64(),
            }
        )
    types = result.pool.node_types
    seconds = np.bincount(
        result.pool.node_type_of(), weights=result.node_seconds, minlength=len(types)
    )
    hours = seconds / SECONDS_PER_HOUR
    price = result.pool.prices()
    return pl.DataFrame(
        {
            "node_type": [t.name for t in types],
            "nodes": [t.count for t in types],
            "node_hours": hours,
            "price_per_hour": price,
            "cost": hours * price,
        }
    )


def _makespan(s: ScheduleColumns) -> float:
    if not s.ended.any():
        return float("nan")
    return float(s.end_s[s.ended].max() - s.submit_s.min())


def _stat(fn: Callable[[np.ndarray], Any], values: np.ndarray) -> float:
    """``fn(values)`` as a float, or nan for an empty set (NumPy would warn or raise)."""
    if values.size == 0:
        return float("nan")
    return float(fn(values))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def per_user(result: SimResult, *, table: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per ``user_id``: who used the machine and how each was served.

    Columns: ``user_id, jobs, core_hours`` (``sum(run * cores) / 3600`` over
    every run of the ended jobs), ``mean_wait_s``, ``p95_wait_s`` (linear
    interpolation, over started jobs), ``mean_bsld`` (over finished jobs). Sorted by core-hours,
    largest first, ties by user id, so the heavy users lead and the order is
    deterministic. Pass ``table`` (from :func:`per_job_table`) to avoid
    recomputing it.
    """
    jobs = per_job_table(result) if table is None else table
    return (
        jobs.group_by("user_id")
        .agg(
            pl.len().cast(pl.Int64).alias("jobs"),
            ((pl.col("run_s") * pl.col("cores")).sum() / SECONDS_PER_HOUR).alias("core_hours"),
            pl.col("wait_s").mean().alias("mean_wait_s"),
            pl.col("wait_s").quantile(0.95, "linear").alias("p95_wait_s"),
            pl.col("bounded_slowdown").mean().alias("mean_bsld"),
        )
        .sort(["core_hours", "user_id"], descending=[True, False])
    )


_SECONDS_IN = {"s": 1.0, "min": 60.0, "h": SECONDS_PER_HOUR, "d": SECONDS_PER_DAY}


def duration_unit(seconds: float) -> str:
    """The unit a person reads ``seconds`` in at a glance: s, min, h or d."""
    seconds = abs(seconds)
    if seconds < 120:
        return "s"
    if seconds < 2 * SECONDS_PER_HOUR:
        return "min"
    if seconds < 2 * SECONDS_PER_DAY:
        return "h"
    return "d"


def format_duration(seconds: float, unit: str | None = None) -> str:
    """Seconds in the unit a person reads at a glance: 45 s, 12.5 min, 3.2 h, 4.1 d.

    ``unit`` (s, min, h, d) forces one, so that figures side by side (a row of
    a summary table) share it: the unit of the row's largest, with a figure
    under 1 kept at two significant digits (0.17 d, 0.035 d) rather than
    rounded to 0.1 or 0.0.
    """
    unit = unit or duration_unit(seconds)
    value = seconds / _SECONDS_IN[unit]
    if unit == "s":
        return f"{value:.1f} s" if abs(value) < 10 else f"{value:.0f} s"
    if value == 0 or abs(value) >= 1:
        return f"{value:.1f} {unit}"
    decimals = 1 - math.floor(math.log10(abs(value)))  # two significant digits
    return f"{value:.{decimals}f} {unit}"


def row_duration_unit(values: Iterable[float | int | None]) -> str | None:
    """The unit of the largest finite figure of ``values`` (None: no finite figure)."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(v)]
    return duration_unit(max(finite)) if finite else None


# --------------------------------------------------------------------------- over time


def resample_time_series(series: pl.DataFrame, bin_s: int) -> pl.DataFrame:
    """Time-weighted means of a :func:`htcsim.schedule.time_series` over bins of ``bin_s`` seconds.

    A month of events is millions of steps; a plot (or a table of daily load)
    wants the mean level in each hour or day. Bins start at ``time_s`` multiples
    of ``bin_s`` from the bin holding the first event; the last bin ends at the
    last event (after it the state no longer changes, so extending it would only
    dilute). Each mean integrates the step function exactly: with cumulative
    integrals ``I(t)``, a bin ``[a, b)`` has mean ``(I(b) - I(a)) / (b - a)``.
    Output columns: ``time_s`` (bin start) and the float means of every other
    column. A series whose only event time is a bin edge gives one bin holding
    that state.
    """
    if bin_s <= 0:
        raise ValueError(f"bin_s must be positive, got {bin_s}")
    value_cols = [c for c in series.columns if c != "time_s"]
    if series.height == 0:
        return pl.DataFrame(schema={"time_s": pl.Int64, **dict.fromkeys(value_cols, pl.Float64)})
    t = series["time_s"].to_numpy().astype(np.int64)
    first_edge = (t[0] // bin_s) * bin_s
    edges = np.arange(first_edge, t[-1], bin_s, dtype=np.int64)
    edges = np.append(edges, t[-1]) if edges.size else np.array([t[0], t[0] + bin_s])
    # Position of the step in force at each edge (-1: before the first event, level 0).
    k = np.searchsorted(t, edges, side="right") - 1
    widths = np.diff(edges).astype(np.float64)
    means: dict[str, np.ndarray] = {}
    for name in value_cols:  # a handful of columns, each fully vectorised
        v = series[name].to_numpy().astype(np.float64)
        cumulative = np.concatenate([[0.0], np.cumsum(v[:-1] * np.diff(t))])
        safe_k = np.maximum(k, 0)
        integral = np.where(k >= 0, cumulative[safe_k] + v[safe_k] * (edges - t[safe_k]), 0.0)
        means[name] = np.diff(integral) / widths
    return pl.DataFrame({"time_s": edges[:-1], **means})


def estimate_errors(result: SimResult) -> pl.DataFrame:
    """Sampled start estimates against the real (first) starts (empty without sampling).

    ``error_s = start_s - estimate_s``: negative when the job started earlier
    than estimated (jobs usually end before their requested time), positive
    when later (a job of higher priority arrived, or placement fragmented).
    """
    rows = result.estimates
    if rows is None or len(rows) == 0:
        return pl.DataFrame(
            schema={
                "job_id": pl.Int64,
                "at_s": pl.Int64,
                "estimate_s": pl.Int64,
                "start_s": pl.Int64,
                "error_s": pl.Int64,
            }
        )
    idx = rows["job_idx"]
    start = result.first_start_s[idx]
    known = rows["estimate_s"] >= 0
    return pl.DataFrame(
        {
            "job_id": result.workload.jobs["job_id"][idx][known],
            "at_s": rows["at_s"][known],
            "estimate_s": rows["estimate_s"][known],
            "start_s": start[known],
            "error_s": (start - rows["estimate_s"])[known],
        }
    )


def estimate_error_summary(result: SimResult) -> dict[str, float]:
    """How good the sampled start estimates were, in seconds and fractions.

    ``median_error_s``; ``p50_abs_error_s`` and ``p90_abs_error_s``, the
    percentiles of the absolute error; ``early_fraction`` and
    ``late_fraction``, the shares of jobs that started before and after
    their estimate; ``max_late_s``, the worst lateness (0 when none was late).
    A median near 0 can hide a tail of late starts: the last three show it.
    """
    errors = estimate_errors(result)["error_s"].to_numpy()
    if errors.size == 0:
        return {}
    absolute = np.abs(errors)
    return {
        "estimates": float(errors.size),
        "median_error_s": float(np.median(errors)),
        "p50_abs_error_s": float(np.percentile(absolute, 50)),
        "p90_abs_error_s": float(np.percentile(absolute, 90)),
        "early_fraction": float(np.mean(errors < 0)),
        "late_fraction": float(np.mean(errors > 0)),
        "max_late_s": float(max(int(errors.max()), 0)),
    }
