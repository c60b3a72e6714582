"""Run segments: every stretch of time a job held its nodes.

A job that never meets a failure runs once, from its start to its end. A node
failure cuts its run short: it goes back to the queue (``requeued``) and
starts again later, from its last checkpoint if it took one, or it ends
``failed`` (no retry left, or the policy fails jobs at once). Each run is a
segment; a job's metrics come from all of them, not from the last one only.

Worked example (one one-core node; job A needs 100 s and checkpoints every
30 s; the node fails at 70 and is back at 80)::

    segment  start  end  outcome    saved  lost
    0          0     70  requeued     60    10    (checkpoints at 30 and 60 hold)
    1         80    120  completed     0     0    (40 s left to run)

    first start 0 (wait 0), requeue wait 80 - 70 = 10, run 70 + 40 = 110 s
    busy core-seconds 110 (the lost 10 s occupied the core too), useful 100

The arrays are one row per segment, ordered by job row then start; the nodes
of each segment are a slice of one flat array (CSR), since a Python list per
segment would cost a replay of 200,000 jobs as much as the replay itself.
A node set is known only where the replay read it: for the segments of a
job a failure touched (the kernel keeps a placement only while it runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

SEGMENT_OUTCOMES = ("requeued", "failed", "completed", "timeout", "running")
"""How a segment ended: its node failed and the job went back to the queue;
its node failed and the job ended failed; the job ran to its end; it was
killed at its requested time; it had not ended when the replay stopped."""

REQUEUED, FAILED, COMPLETED, TIMEOUT, RUNNING = range(len(SEGMENT_OUTCOMES))

FINAL_STATES = ("completed", "failed", "cancelled", "timeout", "pending", "running")
"""How a job ended in the replay (jobs.csv ``final_state``). ``pending`` and
``running`` appear only in a replay stopped before every job ended."""

SEGMENTS_SCHEMA: dict[str, pl.DataType] = {
    "job_id": pl.Int64(),
    "segment": pl.Int32(),
    "start_s": pl.Int64(),
    "end_s": pl.Int64(),
    "run_s": pl.Int64(),
    "cores": pl.Int64(),
    "outcome": pl.Enum(SEGMENT_OUTCOMES),
    "saved_s": pl.Int64(),
    "lost_s": pl.Int64(),
    "nodes": pl.List(pl.Int32()),
}
"""Columns of ``segments.parquet``: one row per segment (see :meth:`RunSegments.to_frame`)."""


@dataclass(frozen=True)
class RunSegments:
    """Every run segment of a schedule, ordered by (job row, start).

    ``end_s`` is -1 for a segment still running when the replay stopped;
    ``saved_s`` is the run a checkpoint kept when the segment was cut short
    (0 otherwise); segment k held ``nodes[node_offsets[k]:node_offsets[k + 1]]``,
    an empty slice when its node set was not recorded.
    """

    job_idx: np.ndarray  # int64, row of the job in workload.jobs
    start_s: np.ndarray  # int64
    end_s: np.ndarray  # int64, -1 while running
    outcome: np.ndarray  # int8, index into SEGMENT_OUTCOMES
    saved_s: np.ndarray  # int64
    node_offsets: np.ndarray  # int64, one more than segments
    nodes: np.ndarray  # int32 node indices

    def __len__(self) -> int:
        return int(self.job_idx.shape[0])

    @property
    def ended(self) -> np.ndarray:
        return self.end_s >= 0

    @property
    def run_s(self) -> np.ndarray:
        """Length of each ended segment (0 for one still running)."""
        return np.where(self.ended, self.end_s - self.start_s, 0)

    @property
    def lost_s(self) -> np.ndarray:
        """Run each segment threw away: all of a failed one, all but the
        checkpointed part of a requeued one, none of the others."""
        run = self.run_s
        return np.select(
            [self.outcome == FAILED, self.outcome == REQUEUED], [run, run - self.saved_s], 0
        )

    # ------------------------------------------------------------------ per job

    def _firsts(self) -> np.ndarray:
        """Position of each job's first segment."""
        job = self.job_idx
        return np.flatnonzero(np.r_[True, job[1:] != job[:-1]]) if len(job) else job

    def first_start(self, n_jobs: int) -> np.ndarray:
        """When each job first started (-1: never)."""
        out = np.full(n_jobs, -1, dtype=np.int64)
        first = self._firsts()
        out[self.job_idx[first]] = self.start_s[first]
        return out

    def per_job_sum(self, values: np.ndarray, n_jobs: int) -> np.ndarray:
        """``values`` (one per segment, integers) summed per job, exactly."""
        out = np.zeros(n_jobs, dtype=np.int64)
        first = self._firsts()
        if len(first):
            out[self.job_idx[first]] = np.add.reduceat(np.asarray(values, np.int64), first)
        return out

    def requeue_wait_s(self, n_jobs: int) -> np.ndarray:
        """Per job: the time spent queued again between its segments."""
        job = self.job_idx
        gap = np.zeros(len(job), dtype=np.int64)
        if len(job) > 1:
            again = job[1:] == job[:-1]
            gap[1:] = np.where(again, self.start_s[1:] - self.end_s[:-1], 0)
        return self.per_job_sum(gap, n_jobs)

    def busy_core_s(self, cores: np.ndarray) -> int:
        """Core-seconds every ended segment held (lost work included)."""
        return int(np.sum(self.run_s * cores[self.job_idx]))

    # ------------------------------------------------------------------ tables

    def to_frame(self, job_id: np.ndarray, cores: np.ndarray) -> pl.DataFrame:
        """One row per segment (SEGMENTS_SCHEMA): ``segment`` numbers a job's
        runs from 0; ``run_s`` and ``lost_s`` are null while running;
        ``nodes`` is null where the node set was not recorded."""
        n = len(self)
        first = self._firsts()
        index = np.arange(n, dtype=np.int64) - np.repeat(first, np.diff(np.r_[first, n]))
        ended = self.ended
        frame = pl.DataFrame(
            {
                "job_id": job_id[self.job_idx].astype(np.int64),
                "segment": index.astype(np.int32),
                "start_s": self.start_s,
                "end_s": self.end_s,
                "run_s": self.run_s,
                "cores": cores[self.job_idx].astype(np.int64),
                "outcome": pl.Series(np.asarray(SEGMENT_OUTCOMES)[self.outcome], dtype=pl.String),
                "saved_s": self.saved_s,
                "lost_s": self.lost_s,
                "_ended": ended,
            }
        ).with_columns(
            *(pl.when(pl.col("_ended")).then(pl.col(c)).alias(c) for c in ("end_s", "run_s")),
            pl.when(pl.col("_ended")).then(pl.col("lost_s")).alias("lost_s"),
        )
        frame = frame.drop("_ended").with_columns(nodes=self._node_lists())
        return frame.cast(SEGMENTS_SCHEMA)  # type: ignore[arg-type]

    def _node_lists(self) -> pl.Series:
        """The node sets as a list column, built in polars (no list per segment in Python)."""
        n = len(self)
        counts = np.diff(self.node_offsets)
        held = pl.DataFrame(
            {"segment": np.repeat(np.arange(n, dtype=np.int64), counts), "node": self.nodes}
        )
        lists = held.group_by("segment", maintain_order=True).agg(pl.col("node"))
        every = pl.DataFrame({"segment": np.arange(n, dtype=np.int64)})
        joined = every.join(lists, on="segment", how="left", maintain_order="left")
        return joined["node"].cast(pl.List(pl.Int32())).alias("nodes")


def final_segments(
    start_s: np.ndarray,
    end_s: np.ndarray,
    *,
    node_failed: np.ndarray | None = None,
    timed_out: np.ndarray | None = None,
) -> RunSegments:
    """One segment per started job, from its (last) start to its end: the
    whole schedule of a replay without failures."""
    start = np.asarray(start_s, dtype=np.int64)
    end = np.asarray(end_s, dtype=np.int64)
    rows = np.flatnonzero(start >= 0)
    outcome = np.full(len(start), COMPLETED, dtype=np.int8)
    if timed_out is not None:
        outcome[np.asarray(timed_out, dtype=bool)] = TIMEOUT
    if node_failed is not None:
        outcome[np.asarray(node_failed, dtype=bool)] = FAILED
    outcome[end < 0] = RUNNING
    return RunSegments(
        job_idx=rows.astype(np.int64),
        start_s=start[rows],
        end_s=end[rows],
        outcome=outcome[rows],
        saved_s=np.zeros(len(rows), dtype=np.int64),
        node_offsets=np.zeros(len(rows) + 1, dtype=np.int64),
        nodes=np.empty(0, dtype=np.int32),
    )


def merge_segments(*parts: RunSegments) -> RunSegments:
    """The segments of ``parts`` together, ordered by (job row, start)."""
    job = np.concatenate([p.job_idx for p in parts])
    start = np.concatenate([p.start_s for p in parts])
    order = np.lexsort((start, job))
    counts = np.concatenate([np.diff(p.node_offsets) for p in parts])
    offsets = np.concatenate(
        [p.node_offsets[:-1] + base for p, base in zip(parts, _bases(parts), strict=True)]
    )
    nodes = np.concatenate([p.nodes for p in parts])
    kept = counts[order]
    new_offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(kept, out=new_offsets[1:])
    gather = np.repeat(offsets[order] - new_offsets[:-1], kept) + np.arange(new_offsets[-1])
    return RunSegments(
        job_idx=job[order],
        start_s=start[order],
        end_s=np.concatenate([p.end_s for p in parts])[order],
        outcome=np.concatenate([p.outcome for p in parts])[order],
        saved_s=np.concatenate([p.saved_s for p in parts])[order],
        node_offsets=new_offsets,
        nodes=nodes[gather].astype(np.int32),
    )


def _bases(parts: tuple[RunSegments, ...]) -> list[int]:
    """Where each part's nodes begin in the concatenated node array."""
    sizes = [len(p.nodes) for p in parts]
    return [int(v) for v in np.r_[0, np.cumsum(sizes)[:-1]]] if sizes else []
