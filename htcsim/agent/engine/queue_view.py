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
    """One snapshot of the queue; its start estimates computed once, on demand."""

    def __init__(
        self,
        snapshot: QueueSnapshot,
        taken: float,
        turns: Callable[[], int],
        observe: Callable[[float, int], None],
    ) -> None:
        self.snapshot = snapshot
        self.taken = taken
        self._turns = turns
        self._observe = observe
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

    def holds(self, job_ids: Sequence[int], states: Sequence[str]) -> bool:
        """Every job is in the snapshot, in the state the store gives it (``states``):
        one held by a user is held there with reason Held; a pending one is pending,
        or held for a dependency or its begin time (the store calls those pending)."""
        entries = self.entries(job_ids)
        if (entries < 0).any():
            return False
        pending = entries < self.snapshot.n_pending
        by_user = self.snapshot.reasons[entries] == _HELD
        held = np.array([s == "held" for s in states], dtype=bool)
        return not bool(((held & pending) | (~held & ~pending & by_user)).any())

    def estimates(self) -> np.ndarray:
        """Every pending job's estimated start (queue order; -1 never): computed by
        the first caller, without the kernel lock; later callers share it."""
        with self._lock:
            if self._estimates is None:
                turns = self._turns()
                t0 = time.perf_counter()
                self._estimates = self.snapshot.estimate_starts()
                self._observe(time.perf_counter() - t0, self._turns() - turns)
            return self._estimates

    def info(self, job_ids: Sequence[int], *, estimate: bool) -> dict[int, dict[str, Any]]:
        """Reason, priority and its factors (and estimated start) of each job the
        snapshot holds, by job id; jobs it does not hold are left out."""
        snap = self.snapshot
        entries = self.entries(job_ids)
        starts = self.estimates() if estimate else None
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
    records one computation.
    """

    def __init__(
        self,
        take: Callable[[], QueueSnapshot],
        turns: Callable[[], int],
        observe: Callable[[float, int], None],
        fresh_s: float = FRESH_S,
    ) -> None:
        self._take = take
        self._turns = turns
        self._observe = observe
        self.fresh_s = fresh_s
        self._view: QueueView | None = None
        self._lock = threading.Lock()

    def view(self, job_ids: Sequence[int], states: Sequence[str]) -> QueueView:
        """A view that holds the jobs in the states the store gives them: the
        current one if it is fresh and does, else a new one."""
        with self._lock:
            view = self._view
            now = time.monotonic()
            if view is None or now - view.taken > self.fresh_s or not view.holds(job_ids, states):
                view = QueueView(self._take(), now, self._turns, self._observe)
                self._view = view
            return view

    def live(
        self, job_ids: Sequence[int], states: Sequence[str], *, estimate: bool
    ) -> dict[int, dict[str, Any]]:
        """``QueueView.info`` of the jobs (``states``: pending or held, as stored)."""
        return self.view(job_ids, states).info(job_ids, estimate=estimate)
