"""The run segments node failures cut short, read from the kernel as the replay goes.

The kernel keeps, per job, only its last start, its end and running totals
(requeues, run lost, run saved by checkpoints): enough to schedule, not
enough to account for the runs a failure cut short. The replay applies node
failures in the feed (in C, before each step); this recorder runs just
before the steps at which a failure is due and fails the nodes that hold
tasks itself, through the same kernel call (``fail_node``), so that it
learns which jobs were hit, since when they ran and on which nodes. The
feed's own application of the same failure then finds the node down and
empty and changes nothing: the schedule is the one the feed alone gives.

A requeued job is then watched until it starts again, to read the nodes of
its next segment. The work is per failure and per requeued job, never per
step of the replay: between failures, with no requeued job waiting, the
driver does not call the recorder at all.
"""

from __future__ import annotations

import numpy as np

from htcsim.kernel import JobState, Kernel
from htcsim.segments import FAILED, REQUEUED, RunSegments, final_segments, merge_segments

NO_MARK = 1 << 62
"""A time no replay reaches: the recorder needs no call any more."""

_RUNNING = int(JobState["RUNNING"])
_PENDING = int(JobState["PENDING"])
_ENDED = int(JobState["ENDED"])


class _Column:
    """A NumPy array that grows by doubling: appends cost amortized O(1), no
    Python object per value."""

    def __init__(self, dtype: type[np.generic]) -> None:
        self._data = np.empty(64, dtype=dtype)
        self._n = 0

    def extend(self, values: np.ndarray) -> None:
        need = self._n + len(values)
        self._reserve(need)
        self._data[self._n : need] = values
        self._n = need

    def append(self, value: int) -> None:
        self._reserve(self._n + 1)
        self._data[self._n] = value
        self._n += 1

    def _reserve(self, need: int) -> None:
        if need > len(self._data):
            grown = np.empty(max(need, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self._n] = self._data[: self._n]
            self._data = grown

    def view(self) -> np.ndarray:
        return self._data[: self._n]

    def __len__(self) -> int:
        return self._n


class _NodeSets:
    """Node sets of records, one after the other (CSR: counts, then the nodes)."""

    def __init__(self) -> None:
        self.counts = _Column(np.int64)
        self.nodes = _Column(np.int32)

    def add(self, nodes: np.ndarray) -> None:
        self.counts.append(len(nodes))
        self.nodes.extend(nodes)

    def offsets(self) -> np.ndarray:
        out = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts.view(), out=out[1:])
        return out


class InterruptionRecorder:
    """Segments cut short by node failures, and the nodes of the runs that follow.

    ``failures`` are FAILURE_DTYPE rows already checked against the nodes;
    ``checkpoint_s`` the checkpoint interval of each job (0: none), as the
    kernel holds it, to split a cut segment's run into saved and lost.
    """

    def __init__(self, kernel: Kernel, failures: np.ndarray, checkpoint_s: np.ndarray) -> None:
        order = np.lexsort((failures["node"], failures["time_s"]))
        self._kernel = kernel
        self._fail_t = failures["time_s"][order].astype(np.int64)
        self._fail_node = failures["node"][order].astype(np.int64)
        self._next = 0
        self._checkpoint_s = np.asarray(checkpoint_s, dtype=np.int64)
        self._watch: list[int] = []  # requeued jobs not started again yet
        self._passes = 0  # passes run when the watched jobs were last read
        # segments cut short
        self._job = _Column(np.int64)
        self._start = _Column(np.int64)
        self._end = _Column(np.int64)
        self._failed = _Column(np.bool_)
        self._saved = _Column(np.int64)
        self._held = _NodeSets()
        # restarts of requeued jobs: the job and its nodes
        self._restart_job = _Column(np.int64)
        self._restart_held = _NodeSets()

    def first_mark(self) -> int:
        """The first time the recorder must run before the step."""
        return int(self._fail_t[0]) if len(self._fail_t) else NO_MARK

    def __call__(self, now: int) -> int:
        """Before the step at ``now``: read the restarts since the last call,
        then fail the nodes due now that hold tasks. Returns the next time
        the recorder must run (every step while a requeued job waits)."""
        if self._watch and self._started_since():
            self._read_restarts()
        times, k = self._fail_t, self._next
        while k < len(times) and times[k] <= now:
            self._fail(int(self._fail_node[k]), now)
            k += 1
        self._next = k
        if self._watch:
            self._passes = self._kernel.n_passes
            return now
        return int(times[k]) if k < len(times) else NO_MARK

    def finish(self) -> None:
        """After the last step: the restarts it made."""
        if self._watch and self._started_since():
            self._read_restarts()

    # ------------------------------------------------------------------ failures

    def _fail(self, node: int, now: int) -> None:
        """Fail ``node`` now if it holds tasks (down, off and idle nodes hold
        none: the feed's failure event does all there is to do)."""
        kernel = self._kernel
        tasks = kernel.tasks_per_node()
        if tasks[node] == 0:
            return
        start = kernel.start_times()
        if tasks[node] == 1:
            # one task, so one job: the nodes it gives back are its nodes
            hits = kernel.fail_node(node, now)
            released = np.flatnonzero(tasks != kernel.tasks_per_node()).astype(np.int32)
            held = {int(j): released for j in hits}
        else:
            held = self._placements_on(node)
            hits = kernel.fail_node(node, now)
        if len(held) != len(hits) or any(int(j) not in held for j in hits):
            raise RuntimeError(
                f"node {node} failed at {now}: the kernel hit jobs {sorted(int(j) for j in hits)}, "
                f"the placements showed {sorted(held)}"
            )
        for j in hits.tolist():
            self._cut(j, int(start[j]), now, held[j])

    def _placements_on(self, node: int) -> dict[int, np.ndarray]:
        """The nodes of every running job with a task on ``node`` (read before it fails)."""
        kernel = self._kernel
        out: dict[int, np.ndarray] = {}
        for j in np.flatnonzero(kernel.job_states() == _RUNNING).tolist():
            nodes = kernel.job_allocation(j)[0]
            if (nodes == node).any():
                out[j] = nodes
        return out

    def _cut(self, j: int, start: int, now: int, nodes: np.ndarray) -> None:
        """Record job ``j``'s segment [start, now), cut short: requeued or failed."""
        failed = self._kernel.state_code(j) == _ENDED
        interval = int(self._checkpoint_s[j])
        run = now - start
        saved = 0 if failed or interval <= 0 else (run // interval) * interval
        self._job.append(j)
        self._start.append(start)
        self._end.append(now)
        self._failed.append(failed)
        self._saved.append(saved)
        self._held.add(nodes)
        if not failed:
            self._watch.append(j)

    def _started_since(self) -> bool:
        """Whether the passes since the last call may have started a job: not
        when one pass ran (the usual step) and it started none."""
        kernel = self._kernel
        return kernel.n_passes != self._passes + 1 or kernel.n_started > 0

    def _read_restarts(self) -> None:
        """The nodes of each watched job that started again since the last call
        (checked before every step while one waits: a few integer reads)."""
        code = self._kernel.state_code
        waiting = []
        for j in self._watch:
            state = code(j)
            if state == _RUNNING:
                self._restart_job.append(j)
                self._restart_held.add(self._kernel.job_allocation(j)[0])
            elif state == _PENDING:
                waiting.append(j)
            # (any other state: it ended without running again)
        self._watch = waiting

    # ------------------------------------------------------------------ result

    def segments(
        self,
        start_s: np.ndarray,
        end_s: np.ndarray,
        *,
        node_failed: np.ndarray,
        timed_out: np.ndarray,
        lost_s: np.ndarray,
        saved_s: np.ndarray,
    ) -> RunSegments:
        """Every segment of the replay: those cut short, then each job's last
        run (the kernel's start and end), with the nodes of a restart.

        Checked against the kernel's own totals of run lost and saved per job:
        a disagreement is a bug, named by its first job.
        """
        cut = RunSegments(
            job_idx=self._job.view().copy(),
            start_s=self._start.view().copy(),
            end_s=self._end.view().copy(),
            outcome=np.where(self._failed.view(), FAILED, REQUEUED).astype(np.int8),
            saved_s=self._saved.view().copy(),
            node_offsets=self._held.offsets(),
            nodes=self._held.nodes.view().copy(),
        )
        node_failed = np.asarray(node_failed, dtype=bool)
        last = final_segments(
            np.where(node_failed, -1, start_s), end_s, timed_out=timed_out
        )  # (a failed job's last segment is one cut short)
        whole = merge_segments(cut, self._with_restart_nodes(last))
        n_jobs = len(start_s)
        for name, kernel_total, ours in (
            ("lost", lost_s, whole.per_job_sum(whole.lost_s, n_jobs)),
            ("saved", saved_s, whole.per_job_sum(whole.saved_s, n_jobs)),
        ):
            wrong = np.flatnonzero(np.asarray(kernel_total, dtype=np.int64) != ours)
            if len(wrong):
                j = int(wrong[0])
                raise RuntimeError(
                    f"job slot {j}: its segments {name} {int(ours[j])} s of run, "
                    f"the kernel counted {int(kernel_total[j])} s"
                )
        return whole

    def _with_restart_nodes(self, last: RunSegments) -> RunSegments:
        """``last`` with, for each requeued job, the nodes of its last restart."""
        jobs = self._restart_job.view()
        if not len(jobs) or not len(last):
            return last
        offsets = self._restart_held.offsets()
        nodes = self._restart_held.nodes.view()
        # the last restart of each job (records are in time order)
        distinct, from_end = np.unique(jobs[::-1], return_index=True)
        record = len(jobs) - 1 - from_end
        at = np.searchsorted(last.job_idx, distinct)
        found = (at < len(last)) & (last.job_idx[np.minimum(at, len(last) - 1)] == distinct)
        counts = np.zeros(len(last), dtype=np.int64)
        source = np.zeros(len(last), dtype=np.int64)
        counts[at[found]] = np.diff(offsets)[record[found]]
        source[at[found]] = offsets[record[found]]
        new_offsets = np.zeros(len(last) + 1, dtype=np.int64)
        np.cumsum(counts, out=new_offsets[1:])
        gather = np.repeat(source - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
        return RunSegments(
            job_idx=last.job_idx,
            start_s=last.start_s,
            end_s=last.end_s,
            outcome=last.outcome,
            saved_s=last.saved_s,
            node_offsets=new_offsets,
            nodes=nodes[gather].astype(np.int32),
        )
