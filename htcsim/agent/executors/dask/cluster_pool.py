"""A node pool that a Dask cluster manager fills: the agent's autoscaling.

Why slots: the kernel's autoscaler works on a fixed pool of nodes per type,
each OFF, BOOTING, UP or DRAINING, exactly as in the simulator. Here the pool
is ``nodes`` slots of one node type (``[cluster]`` in the agent's settings).
A slot the kernel boots asks the cluster manager for one more worker
(``scale(n)``, n the slots not OFF); a worker that joins takes a booting slot
and the slot comes UP; a slot the kernel powers off has its worker retired
(the scheduler's ``retire_workers``, then the manager's ``scale_down``, so
that it does not start it again). The kernel powers off idle nodes only, so
a scale-down never kills a running job. A manager that cannot retire a
chosen worker (the dask-kubernetes operator's ``KubeCluster``) is only asked
for fewer workers, and retires idle ones of its own choosing (the
scheduler's ``workers_to_close`` prefers idle workers); a bound worker it
takes is a lost node whose slot asks for a replacement, which the worker the
kernel released, still there and unbound, becomes. A worker that is lost
leaves its slot BOOTING: a replacement is asked for; a worker nobody asked
for is not used.

Why the pool watches the manager's workers: a manager keeps a spec per worker
it started (a batch job, a pod) and starts one only when ``scale`` asks for
more specs than it has. A batch job that ends (its walltime, ``scancel``)
leaves its spec behind, so ``scale(n)`` with the same ``n`` starts nothing
and the slot would stay BOOTING forever; a job that never starts (held,
queued behind others for good) would too. Every ``WATCH_S`` the pool compares
the manager's specs with the scheduler's workers: a spec whose worker left
and did not come back within ``rejoin_s`` (a nanny restarts a killed worker
in seconds; a batch job that ended never does), or that produced no worker
within ``boot_timeout_s`` of being asked for, is given up: the manager is
asked for one worker more (it submits a new job), then ``scale_down`` of the
one given up (it cancels its job). A manager without ``scale_down`` (one
that chooses its workers itself) is asked for the count again when the pool
has been short of workers for ``boot_timeout_s``. Each replacement is logged
and counted (``replaced``; the agent's ``htcsim_pool_boots_replaced``).

The manager's calls run on one thread of their own, in order: a cloud API
call must never hold the scheduling loop.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from htcsim.agent.config import AgentConfigError, ClusterConfig, NodeSpec

log = logging.getLogger(__name__)

WATCH_S = 1.0
"""How often the pool compares the manager's workers with the scheduler's."""
REASONS = ("job_ended", "boot_timeout")
"""Why a manager's worker was given up and replaced: its worker left and its
job did not bring it back; or it produced no worker within the boot bound."""


def create_manager(config: ClusterConfig, security: Any = None) -> Any:
    """Instantiate ``config.manager`` with ``config.options`` (and ``security``,
    the agent's TLS credentials, unless the options set their own); errors name
    the setting."""
    module_name, _, class_name = config.manager.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentConfigError(
            f"cluster.manager: cannot import {module_name} ({exc}); install the package "
            "that provides it (dask-jobqueue, dask-kubernetes, ...)"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None or not callable(cls):
        raise AgentConfigError(f"cluster.manager: {module_name} has no class {class_name}")
    options = dict(config.options)
    if security is not None:
        options.setdefault("security", security)
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise AgentConfigError(f"cluster.options: {config.manager} refused them: {exc}") from exc


class ClusterPool:
    """The slots of the pool and the workers bound to them (the scheduling
    loop's bookkeeping), plus the calls on the cluster manager."""

    def __init__(
        self,
        config: ClusterConfig,
        manager: Any,
        client: Any,
        *,
        rejoin_s: float = 15.0,
        on_replace: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self.client = client
        self.rejoin_s = rejoin_s  # a worker that left may come back (its nanny) this long
        self.on_replace = on_replace  # called with the reason of each replacement
        self.replaced = dict.fromkeys(REASONS, 0)
        self._lock = threading.Lock()
        self.given_up: set[str] = set()  # addresses of workers whose job was cancelled
        self._missing: dict[str, float] = {}  # manager worker -> since when it has no worker
        self._had_worker: set[str] = set()  # manager workers whose worker joined once
        self._seen: set[str] = set()  # workers the inventory listed since the last watch
        self._short_since: float | None = None  # no scale_down: since when workers < target
        self._next_watch = time.monotonic() + WATCH_S
        self.slots = [
            NodeSpec(f"{config.node_type}-{k}", config.cores, config.mem_mib, config.gpus, ())
            for k in range(config.nodes)
        ]
        self.workers: list[NodeSpec | None] = [None] * config.nodes
        self.retiring: set[str] = set()  # addresses being retired: not to be bound again
        self.target = 0  # workers last asked of the manager
        self.refused: set[str] = set()  # workers too small for the node type (logged once)
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="htcsim-cluster", daemon=True)
        self._thread.start()

    @property
    def scheduler_address(self) -> str:
        return str(self.manager.scheduler_address)

    # ------------------------------------------------------------------ bookkeeping

    def fits(self, worker: NodeSpec) -> bool:
        """Can the worker be one node of the type (it declares at least as much)?"""
        c = self.config
        return worker.cores >= c.cores and worker.mem_mib >= c.mem_mib and worker.gpus >= c.gpus

    def changes(self, workers: Sequence[NodeSpec]) -> tuple[list[int], list[NodeSpec]]:
        """(slots whose worker is gone, workers not yet bound) for this inventory."""
        present = {w.address for w in workers}
        self.retiring &= present  # a retired worker that left is forgotten
        bound = {w.address for w in self.workers if w is not None}
        lost = [k for k, w in enumerate(self.workers) if w is not None and w.address not in present]
        new = []
        with self._lock:
            given_up = set(self.given_up)
            self._seen.update(w.name for w in workers)  # one that came and went between watches
        for w in workers:
            if w.address in bound or w.address in self.retiring:
                continue
            if w.address in given_up:
                continue  # its job is being cancelled: a replacement is asked for
            if not self.fits(w):
                if w.address not in self.refused:
                    self.refused.add(w.address)
                    log.warning(
                        "worker %s (%s) declares %d cores, %d MiB, %d GPUs: less than a %s node; "
                        "not used",
                        w.name,
                        w.address,
                        w.cores,
                        w.mem_mib,
                        w.gpus,
                        self.config.node_type,
                    )
                continue
            new.append(w)
        return lost, new

    def bind(self, k: int, worker: NodeSpec) -> NodeSpec:
        """Slot ``k`` is now ``worker``; returns the slot's node (its address set)."""
        self.workers[k] = worker
        return replace(self.slots[k], address=worker.address)

    def unbind(self, k: int) -> NodeSpec | None:
        worker, self.workers[k] = self.workers[k], None
        return worker

    def summary(self) -> dict[str, Any]:
        return {
            "manager": self.config.manager,
            "node_type": self.config.node_type,
            "size": self.config.nodes,
            "target": self.target,
            "workers": sum(1 for w in self.workers if w is not None),
            "retiring": len(self.retiring),
            "scheduler": self.scheduler_address,
            "boot_timeout_s": self.config.boot_timeout_s,
            "replaced": dict(self.replaced),
        }

    # ------------------------------------------------------------------ the manager

    def scale(self, n: int) -> None:
        """Ask the manager for ``n`` workers (when it changed)."""
        if n == self.target:
            return
        self.target = n
        self._calls.put(lambda: self._call(self.manager.scale, n))

    @property
    def retires_chosen_workers(self) -> bool:
        """Can the manager forget one named worker (SpecCluster's ``scale_down``)?"""
        return callable(getattr(self.manager, "scale_down", None))

    def retire(self, worker: NodeSpec) -> None:
        """Retire a worker gracefully; the manager forgets it (does not restart
        it). Without ``scale_down`` the next ``scale`` lets the manager choose."""
        if not self.retires_chosen_workers:
            return
        self.retiring.add(worker.address)

        def retire() -> None:
            try:
                self.client.retire_workers([worker.address], close_workers=True, remove=True)
            except Exception:
                log.exception("retiring worker %s failed", worker.name)
            spec = getattr(self.manager, "worker_spec", {})
            names = [k for k in spec if str(k) == worker.name]
            self._call(self.manager.scale_down, names or [worker.name])

        self._calls.put(retire)

    def _call(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            result = method(*args)
            if inspect.isawaitable(result):
                sync = getattr(self.manager, "sync", None)
                if sync is not None:
                    sync(lambda: result)
        except Exception:
            log.exception("cluster manager call %s%r failed", method.__name__, args)

    # ------------------------------------------------------------------ watching the manager

    def watch(self, now: float | None = None) -> None:
        """Give up the manager's workers that ended or never came, and ask
        for the pool's count again (on the manager's thread, every WATCH_S)."""
        now = time.monotonic() if now is None else now
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
        except Exception:  # the scheduler is busy or closing: next time
            log.debug("the pool's watch could not read the scheduler", exc_info=True)
            return
        names = {a: str(w.get("name", a)) for a, w in info.items()}
        present = list(names.values())
        specs = self._specs()
        if specs is None or not self.retires_chosen_workers:
            self._watch_count(now, len(present))
            return
        live = {s for s in (_spec_of(w, specs) for w in present) if s is not None}
        with self._lock:
            self.given_up &= set(names)  # a cancelled job's worker that left is forgotten
            seen, self._seen = self._seen, set()
        joined = {s for s in (_spec_of(w, specs) for w in seen) if s is not None}
        for spec in list(self._missing):
            if spec not in specs or spec in live or spec in joined:
                del self._missing[spec]  # a worker that left is timed from now
        self._had_worker = (self._had_worker | live | joined) & set(specs)
        for spec in specs:
            if spec in live:
                continue
            since = self._missing.setdefault(spec, now)
            left = spec in self._had_worker
            if now - since > (self.rejoin_s if left else self.config.boot_timeout_s):
                mine = {a for a, w in names.items() if _spec_of(w, {spec: None}) == spec}
                reason = "job_ended" if left else "boot_timeout"
                self._give_up(spec, specs[spec], reason, now, mine)

    def _specs(self) -> dict[str, Any] | None:
        """The manager's workers, by name as their workers are named (None:
        a manager that keeps no ``worker_spec``)."""
        spec = getattr(self.manager, "worker_spec", None)
        if not isinstance(spec, dict):
            return None
        for _ in range(3):
            try:
                return {str(k): k for k in list(spec)}
            except RuntimeError:  # changed under us by the manager's loop
                continue
        return None

    def _give_up(self, name: str, key: Any, reason: str, now: float, addresses: set[str]) -> None:
        """Cancel the manager's worker ``name`` (its batch job or pod) and
        have a new one replace it. Its workers
        still connected (``addresses``) are not used. By address, not name:
        a manager names the new worker as the one it cancelled."""
        waited = now - self._missing.pop(name, now)
        self._had_worker.discard(name)
        with self._lock:
            self.given_up |= addresses
        if reason == "job_ended":
            log.warning(
                "pool: worker %s left and its job did not bring it back in %.0f s (the batch "
                "job or pod ended): cancelled, a new one asked for",
                name,
                waited,
            )
        else:
            log.warning(
                "pool: worker %s did not join within %.0f s of being asked for "
                "(boot_timeout_s): its job cancelled, a new one asked for",
                name,
                waited,
            )
        started = getattr(self.manager, "workers", None)
        if isinstance(started, dict) and key not in started:
            # the manager closed the ended job itself (SpecCluster's lost-worker
            # timer) and keeps its spec: asked for the count, it starts it anew
            self._call(self.manager.scale, self.target)
        else:
            # one more first, then the one given up less: the new worker gets a
            # name of its own (a manager names a new worker by the lowest number
            # free, and its lost-worker timer, armed when the old worker left,
            # would close one that took the old name before it joined)
            self._call(self.manager.scale, self.target + 1)
            self._call(self.manager.scale_down, [key])
        self._count(reason)

    def _watch_count(self, now: float, workers: int) -> None:
        """A manager that chooses its workers: short of them for
        ``boot_timeout_s``, it is asked for the count again."""
        if workers >= self.target:
            self._short_since = None
            return
        if self._short_since is None:
            self._short_since = now
        elif now - self._short_since > self.config.boot_timeout_s:
            log.warning(
                "pool: %d of %d workers for %.0f s (boot_timeout_s): the manager is asked "
                "for %d again",
                workers,
                self.target,
                now - self._short_since,
                self.target,
            )
            self._short_since = now
            self._call(self.manager.scale, self.target)
            self._count("boot_timeout")

    def _count(self, reason: str) -> None:
        self.replaced[reason] += 1
        if self.on_replace is not None:
            try:
                self.on_replace(reason)
            except Exception:
                log.exception("counting a pool replacement failed")

    def _run(self) -> None:
        while True:
            wait = max(0.0, self._next_watch - time.monotonic())
            try:
                call = self._calls.get(timeout=wait)
            except queue.Empty:
                call = self._watch_now
            if call is None:
                return
            call()
            if time.monotonic() >= self._next_watch:
                self._watch_now()

    def _watch_now(self) -> None:
        self._next_watch = time.monotonic() + WATCH_S
        try:
            self.watch()
        except Exception:
            log.exception("the pool's watch of the manager failed")

    def close(self) -> None:
        """Finish the calls asked for, then close the manager (its workers stop)."""
        self._calls.put(None)
        self._thread.join(timeout=30)
        try:
            self.manager.close()
        except Exception:
            log.exception("closing the cluster manager failed")


def _spec_of(worker: str, specs: Any) -> str | None:
    """The manager's worker (spec name) a scheduler's worker belongs to: the
    same name, or the name and a suffix (dask-jobqueue's ``processes`` > 1
    start ``name-0``, ``name-1``, ... in one job)."""
    if worker in specs:
        return worker
    head = worker
    while "-" in head:
        head = head.rsplit("-", 1)[0]
        if head in specs:
            return head
    return None
