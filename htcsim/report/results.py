"""Everything one replay produced, written to a directory, and a table comparing runs.

A result directory is self-describing: the per-job schedule (Parquet for
analysis, CSV for anything else, SWF for the literature's tools), every run
segment, per-user and over-time tables, the headline metrics together with
*what was replayed* (the run's name, the workload, the policy, every input
that changes the result, what loading dropped or changed, the htcsim
version), and three figures. A reader of ``summary.json`` alone can tell
whether two runs are comparable.

Layout of ``out_dir``::

    jobs.parquet, jobs.csv   metrics.per_job_table
    segments.parquet         every run of every job (htcsim.segments): start, end,
                             outcome, run saved and lost, nodes where recorded
    users.csv                metrics.per_user
    timeseries.parquet       metrics.time_series (one row per event time; with the
                             kernel's node states and cost when recorded)
    nodes.csv                metrics.node_usage: node-hours and cost per node type
    summary.json             metrics.summarize + provenance (see build_summary)
    schedule.swf             the simulated schedule as an SWF log (each job's last run)
    wait.png, utilization.png, queue.png   (unless plots=False)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

import htcsim
from htcsim.metrics import (
    Summary,
    estimate_error_summary,
    estimate_errors,
    format_duration,
    node_usage,
    per_job_table,
    per_user,
    row_duration_unit,
    summarize,
)
from htcsim.report.figure_process import FigureProcess
from htcsim.report.provenance import result_inputs
from htcsim.schedule import schedule_columns, time_series

if TYPE_CHECKING:
    from htcsim.schedule import SimResult


def write_results(
    result: SimResult,
    out_dir: Path | str,
    *,
    plots: bool = True,
    name: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    figures: FigureProcess | None = None,
) -> dict[str, Path]:
    """Write the result directory (created if needed); returns file name -> path.

    Existing files of the same names are overwritten, others are left alone.
    ``plots=False`` skips the figures (the slow part, and useless in a sweep).
    ``name`` and ``inputs`` go to ``summary.json`` (see :func:`build_summary`).
    The figures are drawn in a process of their own (``figures``, else one
    started here), handed their few hundred points as soon as the time
    series is known, while this one writes the tables.
    """
    own = FigureProcess() if plots and figures is None else None
    try:
        return _write(result, out_dir, (figures or own) if plots else None, name, inputs)
    finally:
        if own is not None:
            own.close()


def _write(
    result: SimResult,
    out_dir: Path | str,
    figures: FigureProcess | None,
    name: str | None,
    inputs: Mapping[str, Any] | None,
) -> dict[str, Path]:
    """The tables, summary and SWF schedule; the figures drawn by ``figures``."""
    # Imported here: the SWF module is I/O for traces, needed only when writing.
    from htcsim.workload.swf_writer import write_swf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out / name
        for name in (
            "jobs.parquet",
            "jobs.csv",
            "segments.parquet",
            "users.csv",
            "timeseries.parquet",
            "summary.json",
            "schedule.swf",
        )
    }
    workload = result.workload
    # The SWF schedule is the largest file: it is formatted and written on a
    # second thread (polars and numpy release the GIL) while the tables are.
    with ThreadPoolExecutor(max_workers=1) as pool:
        swf_done = pool.submit(
            write_swf,
            paths["schedule.swf"],
            workload.jobs,
            result.start_s,
            result.end_s,
            header=workload.header,
            machine=workload.machine,
            comment=f"htcsim {htcsim.__version__}: {workload.name} replayed under "
            f"{result.policy.label}",
        )
        series = drawn = None
        if figures is not None:  # the time series first: the drawing process waits for it
            series = time_series(result)
            drawn = figures.draw(result, series, out)
        table = per_job_table(result)
        table.write_parquet(paths["jobs.parquet"])
        table.write_csv(paths["jobs.csv"])
        columns = schedule_columns(result)
        columns.segments.to_frame(columns.job_id, columns.cores).write_parquet(
            paths["segments.parquet"]
        )
        per_user(result, table=table).write_csv(paths["users.csv"])
        series = time_series(result) if series is None else series
        series.write_parquet(paths["timeseries.parquet"])
        summary = build_summary(result, name=name, inputs=inputs)
        paths["summary.json"].write_text(
            json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        if result.node_seconds is not None:
            paths["nodes.csv"] = out / "nodes.csv"
            node_usage(result).write_csv(paths["nodes.csv"])
        if result.estimates is not None:
            paths["estimates.csv"] = out / "estimates.csv"
            estimate_errors(result).write_csv(paths["estimates.csv"])
        swf_done.result()
    if drawn is not None:
        paths.update(drawn.result())
    return paths


def build_summary(
    result: SimResult, *, name: str | None = None, inputs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The content of ``summary.json``: metrics plus what was replayed, and how.

    Keys: ``name`` (the run's, None when not given), ``workload`` (name),
    ``policy`` (its TOML fields: order, backfill, priority, autoscaler,
    failure handling...), ``policy_label``, ``machine``, ``cluster``,
    ``inputs`` (every input that changes the result: what the result knows,
    :func:`htcsim.report.provenance.result_inputs`, then the caller's
    ``inputs``, such as the trace and policy files with their digests, the
    loading options, the failure model and its seed), ``metrics``
    (:func:`htcsim.metrics.summarize`; undefined figures are ``nan`` here,
    ``null`` in the JSON), ``start_estimates``, ``loading`` (``dropped`` and
    ``changed`` counts by reason, ``skipped_lines``), ``counters`` (the
    simulator's own), ``unix_start_time`` and ``htcsim_version``.
    """
    workload = result.workload
    machine = workload.machine
    return {
        "name": name,
        "workload": workload.name,
        "policy": result.policy.to_dict(),
        "policy_label": result.policy.label,
        "machine": {
            "n_nodes": machine.n_nodes,
            "cores_per_node": machine.cores_per_node,
            "mem_mib_per_node": machine.mem_mib_per_node,
            "gpus_per_node": machine.gpus_per_node,
            "total_cores": machine.total_cores,
        },
        "cluster": None
        if result.cluster is None
        else [asdict(node_type) for node_type in result.cluster.node_types],
        "inputs": {**result_inputs(result), **(inputs or {})},
        "metrics": summarize(result),
        "start_estimates": estimate_error_summary(result),
        "loading": {
            "dropped": {str(k): int(v) for k, v in sorted(workload.dropped.items())},
            "changed": {str(k): int(v) for k, v in sorted(workload.changed.items())},
            "skipped_lines": int(workload.skipped_lines),
        },
        "counters": {str(k): int(v) for k, v in result.counters.items()},
        "unix_start_time": workload.unix_start_time,
        "htcsim_version": htcsim.__version__,
    }


def _json_safe(value: Any) -> Any:
    """Replace nan/inf by None recursively: strict JSON has no NaN, and null reads as unknown."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- table

MISSING = "–"


def _count(v: float) -> str:
    return f"{int(v):,}"


_ROWS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("n_jobs", "jobs", _count),
    ("n_started", "started", _count),
    ("n_finished", "finished", _count),
    ("mean_wait_s", "mean wait", format_duration),
    ("median_wait_s", "median wait", format_duration),
    ("p95_wait_s", "95th percentile wait", format_duration),
    ("max_wait_s", "max wait", format_duration),
    ("mean_response_s", "mean response (wait + run)", format_duration),
    ("mean_bsld", "mean bounded slowdown (10 s)", lambda v: f"{v:,.2f}"),
    ("median_bsld", "median bounded slowdown (10 s)", lambda v: f"{v:,.2f}"),
    ("utilization", "utilization", lambda v: f"{v:.1%}"),
    ("makespan_s", "makespan", format_duration),
    ("throughput_jobs_per_h", "throughput", lambda v: f"{v:,.1f} jobs/h"),
    ("n_killed_at_walltime", "killed at walltime", _count),
    ("n_cancelled", "cancelled (dependency never met)", _count),
    ("n_requeued", "requeued (node failure)", _count),
    ("lost_core_h", "core-hours lost to failures", lambda v: f"{v:,.1f}"),
    ("mean_requeue_wait_s", "mean requeue wait (queued again)", format_duration),
    ("saved_core_h", "core-hours saved by checkpoints", lambda v: f"{v:,.1f}"),
    ("n_node_failed", "failed (node failure, no retry left)", _count),
    ("node_hours", "node-hours provisioned", lambda v: f"{v:,.1f}"),
    ("mean_nodes_provisioned", "mean nodes provisioned", lambda v: f"{v:,.1f}"),
    ("provisioned_utilization", "utilization of provisioned nodes", lambda v: f"{v:.1%}"),
    ("cost", "cost (node-hours x price)", lambda v: f"{v:,.2f}"),
    ("node_boots", "nodes booted (autoscaler)", _count),
    ("node_shutdowns", "nodes powered off (autoscaler)", _count),
    ("replay_s", "replay time (wall clock)", lambda v: f"{v:,.2f} s"),
    ("jobs_per_second", "replay speed", lambda v: f"{v:,.0f} jobs/s"),
)
"""Summary keys in display order, with a label and a formatter carrying the unit."""


def summary_table(summaries: list[tuple[str, Summary]], *, title: str | None = None) -> Table:
    """A rich table comparing runs: one row per metric, one column per run.

    ``summaries`` holds (run label, :func:`htcsim.metrics.summarize` output)
    pairs. Values carry their units; a figure a run does not define (``nan``,
    missing key, ``None`` read back from JSON) shows as a dash.
    """
    table = Table(title=title)
    table.add_column("metric", style="bold")
    for label, _ in summaries:
        table.add_column(label, justify="right")
    for key, name, fmt in _ROWS:
        values = [summary.get(key) for _, summary in summaries]
        if key in _SHOWN_WHEN_NONZERO and not any(v for v in values if v == v):
            continue  # (a feature no run used: no failures, no autoscaler, no prices)
        if fmt is format_duration:  # one unit per row, so the runs compare at a glance
            unit = row_duration_unit(values)
            fmt = partial(format_duration, unit=unit)
        table.add_row(name, *(_cell(value, fmt) for value in values))
    return table


_SHOWN_WHEN_NONZERO = frozenset(
    {
        "n_cancelled",
        "n_requeued",
        "lost_core_h",
        "mean_requeue_wait_s",
        "saved_core_h",
        "n_node_failed",
        "cost",
        "node_boots",
        "node_shutdowns",
    }
)
"""Rows of features a run may not use, left out when every run shows 0 for them."""


def _cell(value: float | int | None, fmt: Callable[[float], str]) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return fmt(value)
