"""The shadow twin inside the agent: a thread that keeps it current, and its report.

Why a thread of its own with its own read-only store connection: the twin
must never slow the scheduling loop nor change what the active kernel does,
so it shares nothing with the loop but the decision log, which it reads as
any other reader of the store would (SQLite WAL: readers never block the
writer). Every few seconds (``shadow_interval_s``), and when the API asks,
it reads the rows logged since its last look and runs the twin up to what
is known.

How far the twin may go: a row is committed at the end of the scheduling
turn that made it, with the turn's start time; so rows still to come may be
for any time from the latest one read, or from a little before the wall
clock when the loop is idle (no row for a while). ``LOG_DELAY_S`` is that
little: a turn longer than it (a very large submission) makes a row arrive
late, and the twin is then rebuilt from the agent's start (counted in
``rewinds``; the result is the same, it only costs time).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from htcsim.agent.metrics import AgentMetrics
from htcsim.agent.shadow.report import wait_stats
from htcsim.agent.shadow.twin import LateRowError, ShadowTwin
from htcsim.agent.store.jobs import AgentStore
from htcsim.agent.store.schema import StoreError
from htcsim.policy import Policy, policy_to_toml

log = logging.getLogger("htcsim.agent")

LOG_DELAY_S = 3
"""Seconds a decision-log row may be committed after its kernel time."""


class ShadowRunner:
    """Keeps a ``ShadowTwin`` of the candidate policy current on one agent's store."""

    def __init__(
        self,
        db_path: Path,
        candidate: Policy,
        *,
        interval_s: float = 2.0,
        metrics: AgentMetrics | None = None,
        clock: Callable[[], float] = time.time,
        log_delay_s: int = LOG_DELAY_S,
    ) -> None:
        self.db_path = db_path
        self.candidate = candidate
        self.candidate_toml = policy_to_toml(candidate)
        self.interval_s = interval_s
        self.metrics = metrics
        self.clock = clock
        self.log_delay_s = log_delay_s
        self.rewinds = 0
        self.error: str | None = None  # the twin stopped on this (a log it cannot follow)
        self._twin = ShadowTwin(candidate)
        self._store: AgentStore | None = None
        self._first_seq = -1  # the twin starts after this row (the agent's start is next)
        self._seq = 0  # the last row read
        self._observed = 0  # twin waits the histogram has had (a rebuild repeats them)
        self._taken = 0  # twin waits taken from the current twin
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="htcsim-shadow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.refresh()

    # ------------------------------------------------------------------ refresh

    def refresh(self) -> None:
        """Read the new log rows and run the twin as far as they allow."""
        with self._lock:
            if self.error is not None:
                return
            try:
                self._refresh()
            except (StoreError, sqlite3.Error) as exc:  # the store is busy or moving: retry
                log.warning("shadow: cannot read the decision log yet: %s", exc)
            except Exception as exc:
                log.exception("shadow: the twin stopped")
                self.error = f"the shadow twin stopped at decision-log row {self._seq}: {exc}"

    def _refresh(self) -> None:
        now = self.clock()  # before reading: rows committed later are no earlier than this
        if self._store is None:
            self._store = AgentStore(self.db_path, readonly=True)
        store = self._store
        if self._first_seq < 0:
            self._first_seq = max(store.last_decision_seq("restart") - 1, 0)
            self._seq = self._first_seq
        rows = store.decisions(after_seq=self._seq)
        try:
            self._twin.feed(rows)
        except LateRowError as exc:
            log.info("shadow: %s; rebuilding the twin from the agent's start", exc)
            self.rewinds += 1
            self._twin = ShadowTwin(self.candidate)
            self._taken = 0
            rows = store.decisions(after_seq=self._first_seq)
            self._twin.feed(rows)
        if rows:
            self._seq = rows[-1][0]
        twin = self._twin
        twin.advance(max(twin.latest_s, int(now) - self.log_delay_s))
        self._publish(now)

    def _publish(self, now: float) -> None:
        tally = self._twin.tally
        waits = tally.take_twin_waits()
        if self.metrics is None:
            return
        m = self.metrics
        for wait in waits:
            if self._taken >= self._observed:
                m.shadow_wait.observe(wait)
                self._observed += 1
            self._taken += 1
        m.shadow_compared.set(tally.compared)
        m.shadow_differences.set(len(tally.differences))
        horizon = self._twin.horizon_s
        m.shadow_lag.set(max(now - horizon, 0.0) if horizon is not None else 0.0)

    # ------------------------------------------------------------------ report

    def report(self, limit: int = 100, *, refresh: bool = True) -> dict[str, Any]:
        """The summary and the first ``limit`` differences (by job id), as GET /shadow."""
        if refresh:
            self.refresh()
        with self._lock:
            twin = self._twin
            tally = twin.tally
            now = self.clock()
            horizon = twin.horizon_s
            summary = {
                "policy": self.candidate.label,
                "policy_toml": self.candidate_toml,
                "active_policy": twin.active_label,
                "jobs_compared": tally.compared,
                "differences": len(tally.differences),
                "live_wait_s": wait_stats(tally.live_waits),
                "shadow_wait_s": wait_stats(tally.twin_waits),
                "shadow_only": len(tally.twin_only),
                "live_only": len(tally.live_only),
                "horizon": horizon,
                "lag_s": max(now - horizon, 0.0) if horizon is not None else None,
                "log_rows": twin.rows,
                "rewinds": self.rewinds,
                "error": self.error,
            }
            shown = sorted(tally.differences, key=lambda c: c.job_id)[:limit]
            return {"summary": summary, "differences": [c.to_dict() for c in shown]}
