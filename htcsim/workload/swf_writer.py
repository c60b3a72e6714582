"""Writing SWF: a simulated schedule (``write_swf``) or a workload itself
(``write_workload_swf``) as an 18-field Standard Workload Format log.

What is written is what the Parallel Workloads Archive's tools, and
``htcsim.workload.swf.read_swf``, read: one job per line in (submit, job id)
order, ``-1`` where a value is unknown, under a header that restates the machine
and the job count and keeps the other entries it is given. The columns are
formatted by polars in one vectorised pass (no Python loop per job); unless the
file is gzipped (a name ending in ``.gz``), the body goes from polars straight to
it. Reading, with the conventions a replay applies, is ``htcsim.workload.swf``.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from htcsim.model import JOB_DTYPE, Machine, Workload

__all__ = ["write_swf", "write_workload_swf"]

_REGENERATED_KEYS = frozenset(
    {"Version", "Computer", "MaxJobs", "MaxRecords", "MaxNodes", "MaxProcs", "UnixStartTime"}
)
"""Header keys the writer states itself, from the schedule and machine it is given."""

_CONTINUATION = ";        "
"""Indent that makes the reader treat a header line as the continuation of a value."""


def _header_lines(key: str, value: str) -> list[str]:
    """``; Key: first line`` plus indented continuation lines, so multi-line values
    (repeated keys, a cleaned log's filter list) read back under the same key."""
    parts = str(value).splitlines() or [""]
    return [f"; {key}: {parts[0]}"] + [_CONTINUATION + part for part in parts[1:]]


def _compact(name: str) -> pl.Expr:
    """Decimal column as text: ``43307`` when integral, ``552.21`` otherwise, ``-1`` when
    not finite. A polars expression, so formatting is vectorised, not per value."""
    col = pl.col(name)
    finite = col.is_finite()
    integral = finite & (col == col.round(0)) & (col.abs() < 2.0**53)
    return (
        pl.when(integral)
        .then(col.cast(pl.Int64, strict=False).cast(pl.String))
        .when(finite)
        .then(col.cast(pl.String))
        .otherwise(pl.lit("-1"))
        .alias(name)
    )


def _write(
    path: Path,
    jobs: np.ndarray,
    wait: np.ndarray,
    run: np.ndarray,
    alloc: np.ndarray,
    *,
    header: dict[str, str] | None,
    machine: Machine | None,
    note: list[str],
    comment: str,
) -> None:
    """Format the 18 columns (polars, vectorised) under a header; gzip for ``.gz``.

    ``jobs`` and the per-job arrays must already be in (submit, job id) order.
    """
    procs = jobs["n_tasks"].astype(np.int64) * jobs["cores_per_task"].astype(np.int64)
    cores = np.maximum(jobs["cores_per_task"].astype(np.int64), 1)
    mem = jobs["mem_mib_per_task"].astype(np.int64)
    req_mem_kib = np.where(mem > 0, -((-mem * 1024) // cores), -1)  # KB per processor
    table = pl.DataFrame(
        {
            "f1": jobs["job_id"],
            "f2": jobs["submit_s"],
            "f3": wait,
            "f4": run,
            "f5": alloc,
            "f6": jobs["avg_cpu_s"],
            "f7": jobs["used_mem_kib"],
            "f8": procs,
            "f9": jobs["walltime_s"],
            "f10": req_mem_kib,
            "f11": jobs["status"].astype(np.int64),
            "f12": jobs["user_id"],
            "f13": jobs["group_id"],
            "f14": jobs["executable_id"],
            "f15": jobs["queue_id"],
            "f16": jobs["partition_id"],
            "f17": jobs["preceding_job_id"],
            "f18": jobs["think_time_s"],
        }
    ).with_columns(_compact("f6"), _compact("f7"))
    given = dict(header or {})
    lines = ["; Version: 2.2", *_header_lines("Computer", given.get("Computer", "htcsim"))]
    lines += [
        line
        for key, value in given.items()
        if key not in _REGENERATED_KEYS
        for line in _header_lines(key, value)
    ]
    lines += [f"; MaxJobs: {jobs.size}", f"; MaxRecords: {jobs.size}"]
    if "UnixStartTime" in given:
        lines += _header_lines("UnixStartTime", given["UnixStartTime"])
    if machine is not None:
        lines += [f"; MaxNodes: {machine.n_nodes}", f"; MaxProcs: {machine.total_cores}"]
    else:
        for key in ("MaxNodes", "MaxProcs"):
            if key in given:
                lines += _header_lines(key, given[key])
    lines += _header_lines("Note", "\n".join(note))
    if comment.strip():
        lines += _header_lines("Comment", comment.strip())
    head = ("\n".join(lines) + "\n").encode("utf-8")

    def write_body(target: IO[bytes]) -> None:
        table.write_csv(
            target, include_header=False, separator=" ", quote_style="never", line_terminator="\n"
        )

    if path.name.endswith(".gz"):
        body = io.BytesIO()
        write_body(body)
        path.write_bytes(gzip.compress(head + body.getvalue(), compresslevel=6, mtime=0))
        return
    with path.open("wb") as handle:  # the body goes straight from polars to the file
        handle.write(head)
        write_body(handle)


def _submit_order(jobs: np.ndarray) -> np.ndarray:
    """Row order SWF requires: by submit time, then job id; refuses negative submits."""
    if jobs.dtype != JOB_DTYPE:
        raise TypeError(f"jobs must have JOB_DTYPE, got {jobs.dtype}")
    if jobs.size and int(jobs["submit_s"].min()) < 0:
        raise ValueError("submit times must be >= 0 to be written as SWF")
    return np.lexsort((jobs["job_id"], jobs["submit_s"]))


def write_swf(
    path: str | Path,
    jobs: np.ndarray,
    start_s: np.ndarray,
    end_s: np.ndarray,
    *,
    header: dict[str, str] | None = None,
    machine: Machine | None = None,
    comment: str = "",
) -> None:
    """Write a simulated schedule as an 18-field SWF log (gzip when ``path`` ends in .gz).

    The output is what the literature's tools read: field 3 is the simulated wait
    (start - submit), field 4 the simulated run (end - start), fields 5 and 8 the
    processors (``n_tasks * cores_per_task``), field 9 the walltime, the rest copied
    from the job table (-1 where unknown). Jobs that never started (``start < 0``) have
    wait and run -1; a job that started but has no end yet has run -1. Jobs are written
    in (submit, job id) order, which SWF requires. GPUs have no SWF field and are not
    written. ``header`` entries (e.g. a source log's ``Workload.header``) are copied,
    except those restated from the schedule (Version, Computer unless given, MaxJobs,
    MaxRecords, MaxNodes, MaxProcs, UnixStartTime); ``comment`` becomes a ``Comment``
    header entry.
    """
    start = np.asarray(start_s, dtype=np.int64)
    end = np.asarray(end_s, dtype=np.int64)
    if start.shape != jobs.shape or end.shape != jobs.shape:
        raise ValueError(
            f"start_s {start.shape} and end_s {end.shape} must match jobs {jobs.shape}"
        )
    order = _submit_order(jobs)
    jobs, start, end = jobs[order], start[order], end[order]
    started = start >= 0
    ended = started & (end >= start)
    procs = jobs["n_tasks"].astype(np.int64) * jobs["cores_per_task"].astype(np.int64)
    _write(
        Path(path),
        jobs,
        np.where(started, start - jobs["submit_s"], -1),
        np.where(ended, end - start, -1),
        procs,
        header=header,
        machine=machine,
        note=[
            "schedule simulated by htcsim: field 3 is the simulated wait, field 4 the",
            "simulated run time (-1 for jobs that never started)",
        ],
        comment=comment,
    )


def write_workload_swf(path: str | Path, workload: Workload, *, comment: str = "") -> None:
    """Write a workload itself (not a schedule) as SWF, e.g. a generated one.

    The jobs go out as they are: field 3 the recorded wait (-1 when unknown, as for
    generated jobs), field 4 the run time, field 5 the recorded allocation where known
    and the processor count otherwise, so :func:`read_swf` gives the same jobs back
    (sizes as ``n_tasks * cores_per_task`` one-core tasks). The machine and start time
    go in the header, so the file replays on the same machine.
    """
    order = _submit_order(workload.jobs)
    jobs = workload.jobs[order]
    procs = jobs["n_tasks"].astype(np.int64) * jobs["cores_per_task"].astype(np.int64)
    recorded = jobs["recorded_alloc"].astype(np.int64)
    header = dict(workload.header)
    if workload.unix_start_time is not None:
        header["UnixStartTime"] = str(workload.unix_start_time)
    _write(
        Path(path),
        jobs,
        jobs["recorded_wait_s"],
        jobs["run_s"],
        np.where(recorded > 0, recorded, procs),
        header=header,
        machine=workload.machine,
        note=[
            f"workload {workload.name} written by htcsim: field 3 is the recorded wait",
            "(-1 when unknown), field 4 the run time; not a simulated schedule",
        ],
        comment=comment,
    )
