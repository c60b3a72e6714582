"""The run segments node failures cut short, read from the kernel as the replay goes.

The kernel keeps, per job, only its last start, its end and running totals
(requeues, run lost, run saved by checkpoints): enough to schedule, not
enough to account for the runs a failure cut short. The replay applies node
failures in the feed (in C, before each step); this recorder runs just
before the steps at which a failure is due and fails the nodes that hold
tasks itself, through the same kernel call (``fail_node``), so that it
learns which jobs were hit and on which nodes. The feed's own application
of the same failure then finds the node down and empty and changes nothing:
the schedule is the one the feed alone gives.

A requeued job is then watched until it starts again, to read when and on
which nodes its next run starts. The start of a job's *first* run is not
read when a failure cuts it (the kernel has it only in a copy of every
job's start, which would cost each failure a pass over all jobs): at the
end, it is what the kernel's totals of run lost and saved leave once the
later runs are counted. The work is per failure and per requeued job, never
per step of the replay: between failures, with no requeued job waiting,
the driver does not call the recorder at all.
"""

from __future__ import annotations

from collections.abc import Callable

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
    """Segments cut short by node failures, and the runs that follow them.

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
        self._running_since: dict[int, int] = {}  # restarted jobs: when the run began
        self._passes = 0  # passes run when the recorder last ran
        self._last_now = -1  # the time it last ran: of the step that followed
        # segments cut short (start -1: a first run, found at the end)
        self._job = _Column(np.int64)
        self._start = _Column(np.int64)
        self._end = _Column(np.int64)
        self._failed = _Column(np.bool_)
        self._held = _NodeSets()
        # restarts of requeued jobs: the job, when, and its nodes
        self._restart_job = _Column(np.int64)
        self._restart_s = _Column(np.int64)
        self._restart_held = _NodeSets()

    def first_mark(self) -> int:
        """The first time the recorder must run before the step."""
        return int(self._fail_t[0]) if len(self._fail_t) else NO_MARK

    def __call__(self, now: int) -> int:
        """Before the step at ``now``: read the restarts the last step made,
        then fail the nodes due now that hold tasks. Returns the next time
        the recorder must run (every step while a requeued job waits)."""
        passes = self._kernel.n_passes
        if self._watch and self._started_since(passes):
            self._read_restarts()
        times, k = self._fail_t, self._next
        while k < len(times) and times[k] <= now:
            self._fail(int(self._fail_node[k]), now)
            k += 1
        self._next = k
        if self._watch:
            self._passes = passes  # (failing nodes runs no pass)
            self._last_now = now
            return now
        return int(times[k]) if k < len(times) else NO_MARK

    def finish(self) -> None:
        """After the last step: the restarts it made."""
        if self._watch and self._started_since(self._kernel.n_passes):
            self._read_restarts()

    # ------------------------------------------------------------------ failures

    def _fail(self, node: int, now: int) -> None:
        """Fail ``node`` now if it holds tasks (down, off and idle nodes hold
        none: the feed's failure event does all there is to do)."""
        kernel = self._kernel
        tasks = kernel.tasks_per_node()
        if tasks[node] == 0:
            return
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
            self._cut(j, now, held[j])

    def _placements_on(self, node: int) -> dict[int, np.ndarray]:
        """The nodes of every running job with a task on ``node`` (read before it fails)."""
        kernel = self._kernel
        out: dict[int, np.ndarray] = {}
        for j in np.flatnonzero(kernel.job_states() == _RUNNING).tolist():
            nodes = kernel.job_allocation(j)[0]
            if (nodes == node).any():
                out[j] = nodes
        return out

    def _cut(self, j: int, now: int, nodes: np.ndarray) -> None:
        """Record job ``j``'s run, cut short at ``now``: requeued or failed."""
        failed = self._kernel.state_code(j) == _ENDED
        self._job.append(j)
        self._start.append(self._running_since.pop(j, -1))
        self._end.append(now)
        self._failed.append(failed)
        self._held.add(nodes)
        if not failed:
            self._watch.append(j)

    def _started_since(self, passes: int) -> bool:
        """Whether the passes since the last call may have started a job: not
        when one pass ran (the usual step) and it started none."""
        return passes != self._passes + 1 or self._kernel.n_started > 0

    def _read_restarts(self) -> None:
        """When and on which nodes each watched job started again (in the step
        since the last call, which ran at ``_last_now``)."""
        code = self._kernel.state_code
        waiting = []
        for j in self._watch:
            state = code(j)
            if state == _RUNNING:
                self._restart_job.append(j)
                self._restart_s.append(self._last_now)
                self._restart_held.add(self._kernel.job_allocation(j)[0])
                self._running_since[j] = self._last_now
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
        run (the kernel's start and end), with the nodes of its restart.

        A cut first run starts where the kernel's total of run lost and saved
        leaves it. Checked: each job has one first run, every run ends after
        it starts, the checkpointed parts add up to the kernel's run saved
        per job, and a restarted job's last run starts at its last restart;
        a disagreement is a bug, named by its first job.
        """
        cut = self._cut_segments(lost_s, saved_s)
        node_failed = np.asarray(node_failed, dtype=bool)
        last = final_segments(
            np.where(node_failed, -1, start_s), end_s, timed_out=timed_out
        )  # (a failed job's last segment is one cut short)
        last = self._with_restarts(last)
        whole = merge_segments(cut, last)
        ours = whole.per_job_sum(whole.saved_s, len(start_s))
        _check(
            whole.job_idx,
            ours[whole.job_idx] == np.asarray(saved_s)[whole.job_idx],
            lambda k: f"its runs saved {ours[k]} s, the kernel counted {saved_s[k]} s",
        )
        return whole

    def _cut_segments(self, lost_s: np.ndarray, saved_s: np.ndarray) -> RunSegments:
        """The cut runs, the first runs' starts found from the kernel's totals:
        all cut runs of a job add up to its run lost plus saved."""
        job = self._job.view().copy()
        start = self._start.view().copy()
        end = self._end.view()
        failed = self._failed.view()
        known = start >= 0
        n_jobs = len(lost_s)
        total = np.asarray(lost_s, np.int64) + np.asarray(saved_s, np.int64)
        counted = np.bincount(job[known], weights=(end - start)[known], minlength=n_jobs)
        first = ~known
        _check(
            job[first],
            np.bincount(job[first], minlength=n_jobs)[job[first]] == 1,
            lambda k: "more than one run cut short has no start",
        )
        start[first] = end[first] - (total[job[first]] - counted[job[first]].astype(np.int64))
        run = end - start
        _check(job, run >= 0, lambda k: "a run cut short ends before the start its totals give")
        interval = self._checkpoint_s[job] if len(job) else np.empty(0, np.int64)
        saved = np.where(failed | (interval <= 0), 0, run // np.maximum(interval, 1) * interval)
        return RunSegments(
            job_idx=job,
            start_s=start,
            end_s=end.copy(),
            outcome=np.where(failed, FAILED, REQUEUED).astype(np.int8),
            saved_s=saved.astype(np.int64),
            node_offsets=self._held.offsets(),
            nodes=self._held.nodes.view().copy(),
        )

    def _with_restarts(self, last: RunSegments) -> RunSegments:
        """``last`` with, for each requeued job, the nodes of its last restart
        (which must be when its last run started)."""
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
        restarted_at = self._restart_s.view()[record[found]]
        _check(
            distinct[found],
            last.start_s[at[found]] == restarted_at,
            lambda k: "its last run does not start when it was seen starting again",
        )
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


def _check(job: np.ndarray, good: np.ndarray, detail: Callable[[int], str]) -> None:
    """Raise naming the first job (slot) for which ``good`` is false: a bug."""
    bad = np.flatnonzero(~np.asarray(good, dtype=bool))
    if len(bad):
        slot = int(job[bad[0]])
        raise RuntimeError(
            f"run segments disagree with the kernel: job slot {slot}: {detail(slot)}"
        )
