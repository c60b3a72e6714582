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

The manager's calls run on one thread of their own, in order: a cloud API
call must never hold the scheduling loop.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from htcsim.agent.config import AgentConfigError, ClusterConfig, NodeSpec

log = logging.getLogger(__name__)


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

    def __init__(self, config: ClusterConfig, manager: Any, client: Any) -> None:
        self.config = config
        self.manager = manager
        self.client = client
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
        for w in workers:
            if w.address in bound or w.address in self.retiring:
                continue
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

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            call()

    def close(self) -> None:
        """Finish the calls asked for, then close the manager (its workers stop)."""
        self._calls.put(None)
        self._thread.join(timeout=30)
        try:
            self.manager.close()
        except Exception:
            log.exception("closing the cluster manager failed")
