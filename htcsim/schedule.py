"""A schedule: what a replay (and later the live agent's log) says happened to each job.

It belongs to the shared domain, below the drivers, so that metrics, plots
and writers read it without importing a driver. The machine's state over
time (:func:`time_series`) is computed here, from the schedule alone, so that
``SimResult.time_series()`` needs nothing above this module; the metrics
(``htcsim.metrics``) are a layer above and read the same checked columns
(:func:`schedule_columns`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from htcsim.cluster import Cluster
from htcsim.model import Workload
from htcsim.policy import Policy
from htcsim.segments import REQUEUED, RunSegments, final_segments

ESTIMATE_DTYPE = np.dtype(
    [
        ("job_idx", np.int64),  # row of the job in workload.jobs
        ("at_s", np.int64),  # when the estimate was asked (the job's submit pass)
        ("estimate_s", np.int64),  # the kernel's estimated start, -1 if it could never start
    ]
)


@dataclass(frozen=True)
class SimResult:
    """The schedule of one replay.

    ``start_s``/``end_s`` are aligned with ``workload.jobs`` (row k is job k):
    each job's last run, from its last start to its end; -1 marks a job that
    never started or never ended (none, for a replay that ran to
    completion). A job a node failure requeued ran more than once:
    ``segments`` holds every run (see :meth:`run_segments`), and the
    metrics read them. ``run_s`` is the time a job held its cores: the
    recorded run time capped at the requested time (the job is killed then),
    plus the runs node failures threw away.
    """

    workload: Workload
    policy: Policy
    start_s: np.ndarray
    end_s: np.ndarray
    replay_seconds: float = 0.0  # wall-clock time of the event loop
    counters: dict[str, int] = field(default_factory=dict)
    cluster: Cluster | None = None  # the nodes replayed on, when not the workload's machine
    estimates: np.ndarray | None = None  # ESTIMATE_DTYPE rows, when sampled
    cancelled: np.ndarray | None = None  # bool per job: a dependency could never be met
    requeues: np.ndarray | None = None  # per job: times requeued because its node failed
    lost_s: np.ndarray | None = None  # per job: run seconds lost to those failures
    saved_s: np.ndarray | None = None  # per job: run seconds checkpoints saved from failures
    node_failed: np.ndarray | None = None  # bool per job: ended failed because its node failed
    pool: Cluster | None = None  # the node pool the kernel held (autoscaling: each type's max)
    node_seconds: np.ndarray | None = None  # per pool node: seconds provisioned (cost basis)
    node_series: pl.DataFrame | None = None  # kernel state after each step (SERIES_COLUMNS)
    segments: RunSegments | None = None  # every run, when failures cut some short
    failures: np.ndarray | None = None  # the node failures replayed (FAILURE_DTYPE rows)
    checkpoint_s: np.ndarray | None = None  # per job: checkpoint interval (None: no checkpoints)

    @property
    def total_cores(self) -> int:
        """Cores of the machine the schedule ran on (for utilization); with
        autoscaling, of the whole pool the autoscaler could boot."""
        if self.pool is not None:
            return self.pool.total_cores
        if self.cluster is not None:
            return self.cluster.total_cores
        return self.workload.machine.total_cores

    def run_segments(self) -> RunSegments:
        """Every run of every job: ``segments`` when the replay recorded them,
        else one run per started job (``start_s`` to ``end_s``)."""
        if self.segments is not None:
            return self.segments
        return final_segments(
            self.start_s,
            self.end_s,
            node_failed=self.node_failed,
            timed_out=self.killed_at_walltime,
        )

    @property
    def first_start_s(self) -> np.ndarray:
        """When each job first started (-1: never); ``start_s`` when no run was cut short."""
        if self.segments is None:
            return np.asarray(self.start_s, dtype=np.int64)
        return self.segments.first_start(len(self.workload.jobs))

    @property
    def wait_s(self) -> np.ndarray:
        """From submit to the first start (the run time a failure threw away is not a wait)."""
        return self.first_start_s - self.workload.jobs["submit_s"]

    @property
    def run_s(self) -> np.ndarray:
        """Time each job held its cores, over all its runs (0 for one that never ran)."""
        segments = self.run_segments()
        return segments.per_job_sum(segments.run_s, len(self.workload.jobs))

    @property
    def killed_at_walltime(self) -> np.ndarray:
        """Jobs that ran shorter than their recorded run time: killed at their request."""
        return killed_at_walltime(
            self.workload.jobs, self.start_s, self.end_s, self.saved_s, self.node_failed
        )

    def time_series(self) -> pl.DataFrame:
        """Busy cores, utilization, queued and running jobs at every event time (polars)."""
        return time_series(self)


def killed_at_walltime(
    jobs: np.ndarray,
    start_s: np.ndarray,
    end_s: np.ndarray,
    saved_s: np.ndarray | None,
    node_failed: np.ndarray | None,
) -> np.ndarray:
    """Jobs whose last run ended before their recorded run time was done (the
    checkpointed work counted as done): killed at their requested time. A job
    its node failure ended is not."""
    ended = (start_s >= 0) & (end_s >= 0)
    ran = end_s - start_s
    if saved_s is not None:
        ran = ran + saved_s  # a restart from a checkpoint runs only the rest
    if node_failed is not None:
        ended &= ~np.asarray(node_failed, dtype=bool)
    return np.asarray(ended & (ran < jobs["run_s"]))


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class ScheduleColumns:
    """The columns every metric needs, validated once (all arrays aligned with the jobs).

    A job is *started* once it ran at all, *ended* once its last run ended,
    *finished* when it ended on its own (done, or killed at its requested
    time) and *failed* when a node failure ended it.
    """

    job_id: np.ndarray  # int64, identity of each row
    submit_s: np.ndarray  # int64
    first_start_s: np.ndarray  # int64, -1 when never started
    start_s: np.ndarray  # int64, start of the last run, -1 when never started
    end_s: np.ndarray  # int64, -1 when never ended
    cores: np.ndarray  # int64, n_tasks * cores_per_task
    started: np.ndarray  # bool
    ended: np.ndarray  # bool, implies started
    finished: np.ndarray  # bool, ended and not failed
    failed: np.ndarray  # bool, ended by a node failure
    run_s: np.ndarray  # int64, time held over every ended run
    lost_s: np.ndarray  # int64, run thrown away by node failures
    segments: RunSegments
    total_cores: int


def schedule_columns(result: SimResult) -> ScheduleColumns:
    """Extract and check the schedule; an impossible one names the first offending job."""
    jobs = result.workload.jobs
    n = len(jobs)
    submit = jobs["submit_s"].astype(np.int64)
    start = np.asarray(result.start_s, dtype=np.int64)
    end = np.asarray(result.end_s, dtype=np.int64)
    if start.shape != submit.shape or end.shape != submit.shape:
        raise ValueError(
            f"start_s {start.shape} and end_s {end.shape} must be aligned with the "
            f"{submit.shape[0]} jobs of workload {result.workload.name!r}"
        )
    segments = result.run_segments()
    first_start = result.first_start_s
    started = first_start >= 0
    ended = started & (end >= 0)
    failed = ended & _flags(result.node_failed, n)
    _check_order(jobs["job_id"], started & (first_start < submit), "starts before it is submitted")
    _check_order(jobs["job_id"], ended & (end < start), "ends before it starts")
    _check_order(jobs["job_id"], ~started & (end >= 0), "has an end but no start")
    backwards = np.zeros(n, dtype=bool)
    backwards[segments.job_idx[segments.ended & (segments.end_s < segments.start_s)]] = True
    _check_order(jobs["job_id"], backwards, "has a run that ends before it starts")
    cores = jobs["n_tasks"].astype(np.int64) * jobs["cores_per_task"].astype(np.int64)
    return ScheduleColumns(
        job_id=jobs["job_id"].astype(np.int64),
        submit_s=submit,
        first_start_s=first_start,
        start_s=start,
        end_s=end,
        cores=cores,
        started=started,
        ended=ended,
        finished=ended & ~failed,
        failed=failed,
        run_s=segments.per_job_sum(segments.run_s, n),
        lost_s=segments.per_job_sum(segments.lost_s, n),
        segments=segments,
        total_cores=result.total_cores,
    )


def _flags(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool) if values is None else np.asarray(values, dtype=bool)


def _check_order(job_id: np.ndarray, bad: np.ndarray, what: str) -> None:
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"invalid schedule: job {int(job_id[k])} (row {k}) {what} "
            f"({int(bad.sum())} job(s) in all)"
        )


# --------------------------------------------------------------------------- over time

SECONDS_PER_HOUR = 3600.0

TIME_SERIES_SCHEMA: dict[str, pl.DataType] = {
    "time_s": pl.Int64(),
    "busy_cores": pl.Int64(),
    "utilization": pl.Float64(),
    "queued_jobs": pl.Int64(),
    "running_jobs": pl.Int64(),
}


def time_series(result: SimResult) -> pl.DataFrame:
    """The machine's state as a step function: one row per distinct event time.

    Row ``i`` holds the state after every event at ``time_s[i]`` (submissions,
    starts and ends of runs) has been applied, valid until ``time_s[i + 1]``.
    So a job submitted and started at the same instant is never counted as
    queued, and a run of 0 s never as running. A job is queued from its
    submit to its first start and again from each requeue to its restart;
    it runs (and its cores are busy) during every run, those a failure cut
    short included. Jobs that never start stay queued, runs that never end
    stay running. ``utilization = busy_cores / total_cores``.

    Computed from the event arrays with one sort and cumulative sums of
    per-time deltas (``np.add.reduceat``), in integers, so it is exact; the order
    of events within one instant does not matter, so the sort need not be stable.
    """
    s = schedule_columns(result)
    runs = s.segments
    ended = runs.ended
    cores = s.cores[runs.job_idx]
    requeued = (runs.outcome[ended] == REQUEUED).astype(np.int64)
    n_sub, n_start, n_end = s.submit_s.size, len(runs), int(np.count_nonzero(ended))
    times = np.concatenate([s.submit_s, runs.start_s, runs.end_s[ended]])
    if times.size == 0:
        return pl.DataFrame(schema=TIME_SERIES_SCHEMA)
    # submit: queued +1; start: queued -1, running +1; end: running -1, and
    # queued +1 when the job goes back to the queue
    d_queued = np.concatenate([np.ones(n_sub, np.int64), -np.ones(n_start, np.int64), requeued])
    d_running = np.concatenate(
        [np.zeros(n_sub, np.int64), np.ones(n_start, np.int64), -np.ones(n_end, np.int64)]
    )
    d_busy = np.concatenate([np.zeros(n_sub, np.int64), cores, -cores[ended]])

    order = np.argsort(times)
    t_sorted = times[order]
    first = np.flatnonzero(np.r_[True, t_sorted[1:] != t_sorted[:-1]])

    def level(delta: np.ndarray) -> np.ndarray:
        return np.cumsum(np.add.reduceat(delta[order], first))

    busy = level(d_busy)
    frame = pl.DataFrame(
        {
            "time_s": t_sorted[first],
            "busy_cores": busy,
            "utilization": busy / s.total_cores,
            "queued_jobs": level(d_queued),
            "running_jobs": level(d_running),
        },
        schema=TIME_SERIES_SCHEMA,
    )
    if result.node_series is None or result.node_series.height == 0:
        return frame
    return _with_nodes(frame, result.node_series)


NODE_COLUMNS = (
    "nodes_idle",
    "nodes_allocated",
    "nodes_booting",
    "nodes_draining",
    "nodes_down",
    "nodes_off",
)


def _with_nodes(frame: pl.DataFrame, nodes: pl.DataFrame) -> pl.DataFrame:
    """The event series joined with the kernel's node series on the union of
    their times (each carried forward): nodes by state, ``nodes_up``
    (provisioned), ``cost_per_h`` and the cumulative ``node_hours`` and ``cost``."""
    dt_h = (nodes["time_s"].shift(-1) - nodes["time_s"]).fill_null(0) / SECONDS_PER_HOUR
    up = nodes.select(pl.sum_horizontal(NODE_COLUMNS[:-1])).to_series()
    nodes = nodes.select(
        "time_s",
        *NODE_COLUMNS,
        pl.Series("nodes_up", up),
        "cost_per_h",
        # value at row i: accrued before time_s[i]
        pl.Series("node_hours", (up * dt_h).cum_sum().shift(1).fill_null(0.0)),
        pl.Series("cost", (nodes["cost_per_h"] * dt_h).cum_sum().shift(1).fill_null(0.0)),
    )
    event_t = frame["time_s"].to_numpy()
    node_t = nodes["time_s"].to_numpy()
    at = np.minimum(np.searchsorted(node_t, event_t), len(node_t) - 1)
    if len(node_t) and (node_t[at] == event_t).all():
        # every event time is a step time (a series recorded at every step):
        # the node rows are the base and carry the events' state forward
        joined = nodes.join_asof(frame, on="time_s").select([*frame.columns, *nodes.columns[1:]])
    else:
        times = pl.concat([frame.select("time_s"), nodes.select("time_s")]).unique().sort("time_s")
        joined = times.join_asof(frame, on="time_s").join_asof(nodes, on="time_s")
    return joined.with_columns(pl.col(c).fill_null(0) for c in joined.columns if c != "time_s")
