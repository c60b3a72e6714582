"""The queue as ``htcsim queue`` and ``show`` see it, computed off the scheduling loop.

Why: a pending job's reason, priority and start estimate, asked of the
kernel one job at a time while the loop's kernel lock is held, cost O(queue)
each: 10,000 pending jobs made one ``queue --start`` hold the kernel for tens
of seconds, and every submit and cancel waited behind it. Here the kernel
lock is held only to copy the queue (``Kernel.snapshot_queue``: reasons and
priorities in one walk, and a copy of what the estimates need; a few
milliseconds for 10,000 jobs). The start estimates are computed from that
copy afterwards, without the lock and with the GIL released, in one walk of
the whole queue, and only when someone asks for them.

One view serves every request that comes within ``FRESH_S`` of it and asks
about jobs it holds in the same state (the pages of one listing, concurrent
``queue`` commands, ``show``): they share its one copy and its one
computation. A job it does not hold (submitted since) or holds in another
state (held or released by a user since) makes a new view, so a person's own
last action always shows.

A queue whose estimates take longer than that to compute (a long queue of
jobs of every size: the walk's profile grows with it) is not recomputed for
every request: while a view computes, and for as long after as it took, it
answers every request, about the jobs it holds in their state (the others
show what the store says). So such a queue keeps at most about half a core
busy however often it is asked about, and the pages of one listing are not
each a computation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from htcsim.kernel import FACTOR_NAMES, QueueSnapshot, Reason

__all__ = ["FRESH_S", "QueueView", "QueueViews"]

FRESH_S = 1.0
"""How long a view answers requests about the jobs it holds (seconds)."""

_REASON_NAMES = {int(r): r.name for r in Reason}
_HELD = int(Reason["Held"])


class QueueView:
    """One snapshot of the queue; its start estimates computed once, on demand.

    ``ready`` is when all it can answer was known (the copy, then the
    estimates once computed); ``cost_s`` what that took."""

    def __init__(
        self,
        snapshot: QueueSnapshot,
        taken: float,
        copy_s: float,
        turns: Callable[[], int],
        observe: Callable[[float, int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot = snapshot
        self.ready = taken
        self.cost_s = copy_s
        self.computing = False
        self._turns = turns
        self._observe = observe
        self._clock = clock
        ids = snapshot.job_ids
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        self._estimates: np.ndarray | None = None
        self._lock = threading.Lock()

    def entries(self, job_ids: Sequence[int]) -> np.ndarray:
        """Each job's entry in the snapshot, -1 for a job it does not hold."""
        asked = np.asarray(job_ids, dtype=np.int64)
        n = len(self._sorted_ids)
        if n == 0 or len(asked) == 0:
            return np.full(len(asked), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, asked), n - 1)
        found = self._sorted_ids[pos] == asked
        return np.where(found, self._order[pos], -1)

    def matching(self, job_ids: Sequence[int], states: Sequence[str]) -> np.ndarray:
        """Each job's entry if the snapshot holds it in the state the store gives it
        (``states``), else -1: one held by a user is held there with reason Held; a
        pending one is pending, or held for a dependency or its begin time (the
        store calls those pending)."""
        entries = self.entries(job_ids)
        held = np.array([s == "held" for s in states], dtype=bool)
        found = entries >= 0
        pending = found & (entries < self.snapshot.n_pending)
        by_user = np.zeros(len(entries), dtype=bool)  # (an empty queue has no reasons to index)
        by_user[found] = (entries[found] >= self.snapshot.n_pending) & (
            self.snapshot.reasons[entries[found]] == _HELD
        )
        other = (held & pending) | (~held & by_user)
        return np.where(other, -1, entries)

    def estimates(self) -> np.ndarray:
        """Every pending job's estimated start (queue order; -1 never): computed by
        the first caller, without the kernel lock; later callers share it."""
        with self._lock:
            if self._estimates is None:
                self.computing = True
                turns = self._turns()
                t0 = self._clock()
                try:
                    self._estimates = self.snapshot.estimate_starts()
                finally:
                    self.computing = False
                self.ready = self._clock()
                elapsed = self.ready - t0
                self.cost_s += elapsed
                self._observe(elapsed, self._turns() - turns)
            return self._estimates

    @property
    def estimated(self) -> bool:
        """Its estimates have been computed."""
        return self._estimates is not None

    def info(
        self, job_ids: Sequence[int], states: Sequence[str], *, estimate: bool
    ) -> dict[int, dict[str, Any]]:
        """Reason, priority and its factors (and estimated start) of each job the
        snapshot holds in its state (``matching``), by job id; the others are left out."""
        snap = self.snapshot
        entries = self.matching(job_ids, states)
        starts = self.estimates() if estimate and (entries >= 0).any() else None
        out: dict[int, dict[str, Any]] = {}
        for job_id, k in zip(job_ids, entries.tolist(), strict=True):
            if k < 0:
                continue
            pending = k < snap.n_pending
            info: dict[str, Any] = {
                "kernel_state": "pending" if pending else "held",
                "reason": _REASON_NAMES[int(snap.reasons[k])],
                "priority": float(snap.priorities[k]),
                "factors": dict(zip(FACTOR_NAMES, snap.factors[k].tolist(), strict=True)),
            }
            if starts is not None and pending:
                t = int(starts[k])
                info["estimated_start"] = None if t < 0 else float(t)
            out[int(job_id)] = info
        return out


class QueueViews:
    """The current view, shared; a new one is taken when it cannot answer.

    ``take`` copies the queue under the kernel lock; ``turns`` counts the
    scheduling loop's turns that took the kernel lock, so a view can report how
    many did while it computed estimates: the evidence that the computation
    does not hold the kernel lock (nor, while it runs, the GIL: the loop's
    thread could not take the lock then either); ``observe(seconds, turns)``
    records one computation; ``clock`` gives the seconds views are aged and
    timed by.
    """

    def __init__(
        self,
        take: Callable[[], QueueSnapshot],
        turns: Callable[[], int],
        observe: Callable[[float, int], None],
        fresh_s: float = FRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._turns = turns
        self._observe = observe
        self.fresh_s = fresh_s
        self._clock = clock
        self._view: QueueView | None = None
        self._last_cost_s = 0.0  # what the last view's estimates cost to make
        self._lock = threading.Lock()

    def view(self, job_ids: Sequence[int], states: Sequence[str]) -> QueueView:
        """The current view if it can answer (see the module's docstring), else a new one."""
        with self._lock:
            view = self._view
            if view is not None and self._usable(view, job_ids, states):
                return view
            if view is not None and view.estimated:
                self._last_cost_s = view.cost_s
            t0 = self._clock()
            snapshot = self._take()
            taken = self._clock()
            view = QueueView(
                snapshot, taken, taken - t0, self._turns, self._observe, clock=self._clock
            )
            self._view = view
            return view

    def _usable(self, view: QueueView, job_ids: Sequence[int], states: Sequence[str]) -> bool:
        age = self._clock() - view.ready
        slow = max(view.cost_s, self._last_cost_s) > self.fresh_s
        if slow and (view.computing or age <= view.cost_s):
            return True  # in use while it computes, and for as long after as it took
        return age <= self.fresh_s and bool((view.matching(job_ids, states) >= 0).all())

    def live(
        self, job_ids: Sequence[int], states: Sequence[str], *, estimate: bool
    ) -> dict[int, dict[str, Any]]:
        """``QueueView.info`` of the jobs (``states``: pending or held, as stored)."""
        return self.view(job_ids, states).info(job_ids, states, estimate=estimate)
