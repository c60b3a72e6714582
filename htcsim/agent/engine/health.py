"""The agent's health as /healthz reports it, and the restarts of the local shepherd.

Why a part of its own: whether the agent can run jobs now is not the
scheduling loop's business alone. The local executor's shepherd may be
restarting (degraded: the agent accepts work, launches wait a moment), its
keeper may be gone (degraded: a second crash would cost the running jobs
their statuses), or it may be unusable (down: another agent took it over).
Each restart of the shepherd is also an event worth counting: the store
keeps the total (meta ``shepherd_restarts``) and the last one, so that the
count, like the job counters, survives the agent; restarts that happened
while the agent was down are counted at its start, from the keeper's
generation the worker reports (and a shepherd that found its predecessor
killed).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from htcsim.agent.engine.state import EngineState, _Command
from htcsim.agent.executors.local.supervisor import Restart

log = logging.getLogger("htcsim.agent")


class Health(EngineState):
    """The executor's health and the shepherd's restarts (see the module docstring)."""

    _shepherd_restarts: int
    _shepherd_last_restart: dict[str, Any] | None

    # ------------------------------------------------------------------ restarts

    def _on_shepherd_restart(self, restart: Restart) -> None:
        """Called by the executor's thread once a restarted shepherd serves."""
        self._commands.put(_Command("shepherd", (restart,)))

    def _shepherd_restarted(self, restart: Restart) -> None:
        """The loop's side of a restart: counted, remembered, and a pass (those
        the restart held back)."""
        self._count_restarts(1, restart.time, restart.reason)
        self._remember_shepherd()
        self._dirty = True

    def _shepherd_at_start(self) -> None:
        """At the agent's start: the restart count from the store, and the
        restarts that happened while the agent was down."""
        self._shepherd_restarts = int(self.store.meta("shepherd_restarts") or 0)
        last = self.store.meta("shepherd_last_restart")
        self._shepherd_last_restart = json.loads(last) if last else None
        identity = getattr(self.executor, "identity", None)
        if not isinstance(identity, dict):
            return
        stored = json.loads(self.store.meta("shepherd") or "null") or {}
        generation = int(identity.get("generation") or 0)
        reason = str(identity.get("restart_reason") or "")
        if identity.get("keeper") and stored.get("keeper") == identity["keeper"]:
            missed = generation - int(stored.get("generation") or 0)
        else:  # another shepherd: a killed one's successor, or one stopped cleanly
            replaced = str(identity.get("replaced") or "")
            missed = generation + (1 if replaced else 0)
            reason = reason or replaced
        if missed > 0:
            when = float(identity.get("restart_time") or 0.0) or self.clock()
            self._count_restarts(missed, when, f"{reason} (while the agent was down)")
        self._remember_shepherd()

    def _remember_shepherd(self) -> None:
        identity = getattr(self.executor, "identity", None)
        if isinstance(identity, dict):
            kept = {"keeper": identity.get("keeper"), "generation": identity.get("generation")}
            self.store.set_meta("shepherd", json.dumps(kept))

    def _count_restarts(self, n: int, when: float, reason: str) -> None:
        self._shepherd_restarts += n
        self._shepherd_last_restart = {"time": when, "reason": reason}
        self.store.set_meta("shepherd_restarts", str(self._shepherd_restarts))
        self.store.set_meta("shepherd_last_restart", json.dumps(self._shepherd_last_restart))
        self.metrics.shepherd_restarts.inc(n)
        log.warning(
            "the shepherd was restarted (%s): %d restart(s) in all", reason, self._shepherd_restarts
        )

    # ------------------------------------------------------------------ health

    def _executor_ready(self) -> bool:
        """Whether the executor can start jobs right now."""
        return self.executor_health()[0]

    def executor_health(self) -> tuple[bool, str]:
        """Whether the executor can run jobs now (the local shepherd connected
        and this agent's), and why not; a backend without ``health`` is ok."""
        health = getattr(self.executor, "health", None)
        if health is None:
            return True, "ok"
        ok, reason = health()
        return bool(ok), str(reason)

    def health(self, loop_alive: bool) -> dict[str, Any]:
        """What /healthz and ``htcsim agent status`` show: ``status`` ok, degraded
        (the agent works, impaired: ``reasons``) or down (it cannot run jobs);
        for the local backend, the shepherd (pids, restarts, the last one)."""
        reasons: list[str] = []
        status = "ok"
        executor_status = getattr(self.executor, "status", None)
        shepherd: dict[str, Any] | None = None
        if callable(executor_status):
            now = executor_status()
            status = str(now["state"])
            reasons += list(now["reasons"])
        if callable(executor_status) and "pid" in now:
            last = self._shepherd_last_restart or {}
            shepherd = {
                "pid": now["pid"],
                "keeper": now["keeper"],
                "restarts": self._shepherd_restarts,
                "last_restart": last.get("time"),
                "last_restart_reason": last.get("reason", ""),
            }
        elif not callable(executor_status):
            ok, reason = self.executor_health()
            if not ok:
                status = "down"
                reasons.append(reason)
        if (
            self.node_specs
            and not any(n.address for n in self.node_specs)
            and self.config.backend == "dask"
            and self.pool is None
        ):
            status = "degraded" if status == "ok" else status
            reasons.append(
                "no Dask worker: every node is down (jobs are taken and wait for workers)"
            )
        if not loop_alive:
            status = "down"
            reasons.insert(0, "the scheduling loop is not running")
        out: dict[str, Any] = {"status": status, "reasons": reasons}
        if shepherd is not None:
            out["shepherd"] = shepherd
        return out
