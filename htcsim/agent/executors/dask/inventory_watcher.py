"""The Dask backend's node inventory: which workers are there, told to the
engine when it changes.

Why a part of its own: the inventory is what the kernel schedules on, and
every way a worker can go (it left, it stopped answering, every worker went
at once, the scheduler itself was lost) must end the same way, under the
same fencing rule: the node is kept, its jobs running and its cores taken,
until its jobs are surely dead (``fence``), and only then is the engine told
that it is gone. A site's nodes never all vanish from the kernel: when no
worker is left (all lost at once, or the scheduler lost), each node is kept
as a *placeholder*, its shape without a worker (no address), which the
engine holds ``down``: jobs are still checked against the nodes the site
has and wait for them, instead of being refused. After the scheduler is
reached again, the workers have ``rejoin_s`` to register before a node whose
worker did not come back is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from distributed import Client

from htcsim.agent.config import NodeSpec
from htcsim.agent.executors.base import LaunchError
from htcsim.agent.executors.dask.scheduler_link import UNREACHABLE, SchedulerLink

logger = logging.getLogger(__name__)

LOST_TOGETHER_S = 2.0
"""Nodes found lost within this long of each other are reported gone
together, at the latest of their fencing times (never sooner than each one's own):
workers that go at once (a killed scheduler, a switch, a rack) leave the
inventory in one change, so that the nodes kept without a worker are the
whole site, not the last few to go."""


def nodes_of(workers: dict[str, Any], heartbeat_timeout_s: float) -> list[NodeSpec]:
    """The nodes the workers declare (the scheduler's ``identity``), in name
    order; workers not heard from within ``heartbeat_timeout_s`` are left
    out (hung or gone)."""
    now = time.time()
    out = []
    for address, info in workers.items():
        if now - float(info.get("last_seen", now)) > heartbeat_timeout_s:
            continue
        resources = info.get("resources") or {}
        cores = int(resources.get("cores", info.get("nthreads", 1)))
        mem_mib = int(resources.get("mem_mib", int(info.get("memory_limit") or 0) >> 20))
        gpus = int(resources.get("gpus", 0))
        name = str(info.get("name", address))
        out.append(NodeSpec(name, cores, mem_mib, gpus, (), address))
    return sorted(out, key=lambda n: n.name)


def dask_nodes(client: Client, heartbeat_timeout_s: float) -> list[NodeSpec]:
    """``nodes_of`` the workers the client's scheduler knows now."""
    return nodes_of(client.scheduler_info(n_workers=-1)["workers"], heartbeat_timeout_s)


def placeholder(node: NodeSpec) -> NodeSpec:
    """A node without its worker: its shape, no address (the engine holds it down)."""
    return dataclasses.replace(node, address="")


class InventoryWatcher:
    """Polls the Dask scheduler for its workers and tells the engine when the
    node inventory changes (a worker joined, left or stopped answering; the
    scheduler was lost or reached again).

    A worker that left or stopped answering is declared lost to the executor
    at once (``fence``: no lease renewal goes to it any more; it returns when
    its jobs are surely dead), but the engine hears of it only then: until
    that time the node is still reported, its jobs running in the kernel and
    its cores taken, and a worker that comes back under its name or its
    address is not reported before the engine has seen the old one go. A
    lost scheduler (``link``) makes every worker lost at once."""

    def __init__(
        self,
        client: Client,
        current: Sequence[NodeSpec],
        on_change: Callable[[list[NodeSpec]], Any],
        heartbeat_timeout_s: float,
        every_s: float = 0.25,
        *,
        empty_ok: bool = False,
        fence: Callable[[str], float] | None = None,
        salvage: Callable[[NodeSpec, list[NodeSpec]], None] | None = None,
        link: SchedulerLink | None = None,
        rejoin_s: float = 0.0,
    ) -> None:
        """``empty_ok``: a pool may shrink to no worker at all (else placeholders
        stand for the nodes); ``link``: the scheduler's connection, made again
        when lost (None: ``client``'s scheduler runs in this process)."""
        self.client = client
        self.link = link
        self._empty_ok = empty_ok
        self._reported = list(current)
        self._seen = _identity(current)
        self._on_change = on_change
        self._timeout = heartbeat_timeout_s
        self._every = every_s
        self._fence = fence or (lambda address: time.monotonic())
        self._salvage = salvage
        self._held: dict[str, tuple[NodeSpec, float]] = {}  # address -> (node, fenced at)
        self._lost_at: dict[str, float] = {}  # address -> when it was found lost
        self._rejoin_s = rejoin_s
        self._rejoin_until = -1.0  # after a reconnection: placeholders kept until then
        self._connected = True
        self._refusal = ""  # the engine's last refusal of an inventory, logged once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="htcsim-inventory", daemon=True)
        self._thread.start()

    def _poll(self) -> list[NodeSpec] | None:
        """The workers there now; [] when the scheduler is lost (every node is);
        None when nothing is known this time (ask again)."""
        if self.link is None:
            try:
                return dask_nodes(self.client, self._timeout)
            except UNREACHABLE:
                return None
        workers = self.link.workers()
        connected = self.link.connected
        if connected and not self._connected:  # reached again: give the workers time
            self._rejoin_until = time.monotonic() + self._rejoin_s
        self._connected = connected
        if workers is None:
            return None if connected else []
        return nodes_of(workers, self._timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._turn()
            except Exception:  # the watcher must outlive any one failed poll
                logger.exception("the Dask node inventory could not be updated")

    def _turn(self) -> None:
        """One poll; the engine told if the inventory changed."""
        nodes = self._poll()
        if nodes is None:
            return
        report = self._holding(nodes)
        if not self._empty_ok:
            report = self._placeholders(report)
        identity = _identity(report)
        if identity != self._seen:
            self._seen = identity
            self._reported = report
            answer = self._on_change(report)
            if isinstance(answer, Future):  # the engine's: a refusal is logged, tried again
                answer.add_done_callback(self._refused)

    def _refused(self, answer: Future[Any]) -> None:
        exc = answer.exception()
        if exc is not None:
            if str(exc) != self._refusal:  # once, not at every poll
                logger.error("the engine refused the new node inventory: %s", exc)
            self._refusal = str(exc)
            self._seen = ()  # told again at the next poll
        else:
            self._refusal = ""

    def _holding(self, nodes: list[NodeSpec]) -> list[NodeSpec]:
        """What to report: the workers there, and the lost ones whose jobs may
        still live (in place of a worker of the same name that came back)."""
        present = {n.address for n in nodes}
        now = time.monotonic()
        newly = False
        for spec in self._reported:
            if spec.address and spec.address not in present and spec.address not in self._held:
                fenced_at = self._fence(spec.address)
                self._held[spec.address] = (spec, fenced_at)
                self._lost_at[spec.address] = now
                newly = True
                logger.info(
                    "node %s (%s) lost: kept until its jobs are fenced", spec.name, spec.address
                )
        if newly:  # lost together, gone together (each fenced by then)
            together = [a for a in self._held if now - self._lost_at[a] <= LOST_TOGETHER_S]
            latest = max(self._held[a][1] for a in together)
            for address in together:
                self._held[address] = (self._held[address][0], latest)
        held = [spec for spec, at in self._held.values() if at > now]
        names = {spec.name for spec in held}
        out = [n for n in nodes if n.address not in self._held and n.name not in names]
        for address, (spec, at) in list(self._held.items()):
            if at <= now:  # reported gone now; back next time, as a new node
                if self._salvage is not None:  # exits it could not report, first
                    self._salvage(spec, nodes)
                del self._held[address]
                self._lost_at.pop(address, None)
        return sorted(out + held, key=lambda n: n.name)

    def _placeholders(self, report: list[NodeSpec]) -> list[NodeSpec]:
        """``report``, with a placeholder for each node reported before and
        missing now, when no worker is left at all, or while the workers of a
        scheduler reached again may still register."""
        if report and time.monotonic() >= self._rejoin_until:
            return report
        there = {n.name for n in report}
        kept = [placeholder(n) for n in self._reported if n.name not in there]
        return sorted(report + kept, key=lambda n: n.name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _identity(nodes: Sequence[NodeSpec]) -> tuple[tuple[str, str, int, int, int], ...]:
    return tuple((n.name, n.address, n.cores, n.mem_mib, n.gpus) for n in nodes)


def wait_for_workers(
    client: Client, heartbeat_timeout_s: float, timeout_s: float
) -> list[NodeSpec]:
    """The inventory once at least one worker is there (the kernel needs a node)."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = dask_nodes(client, heartbeat_timeout_s)
        if nodes:
            return nodes
        if time.monotonic() > deadline:
            raise LaunchError(f"no Dask worker joined the scheduler in {timeout_s:.0f} s")
        time.sleep(0.2)
