"""Each Dask worker's own use, for the per-node gauges
(``htcsim_node_cpu_ratio``, ``htcsim_node_memory_used_bytes``) and samples.

Why: the engine samples a local node from this machine (``psutil``); a Dask
worker is a node elsewhere, and this machine's figures said nothing about it.
The scheduler's per-worker metrics count the worker process alone, not the
jobs it started (processes of their own). So each worker is asked
(``sample``, run in the worker) for its process tree: the worker, its jobs
and whatever they started. CPU is the busy share of the cores it declares
since the previous ask (the first ask says 0), memory the tree's resident
set. The agent asks from a thread of its own (``UsageSampler``) and the
engine takes the last answers: a hung worker never holds up the loop, and a
worker not answered yet (or lost) is not exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import psutil
from distributed.protocol.pickle import dumps

from htcsim.agent.config import NodeSpec

ASK_TIMEOUT_S = 5.0
"""How long one ask to a worker may take; a worker that did not answer keeps
its last figures, and is dropped from the gauges once it leaves."""

_tracked: dict[int, psutil.Process] = {}  # in the worker: the tree seen at the last ask


def sample(cores: int) -> tuple[float, float]:
    """In the worker: (CPU percent of its ``cores`` since the last call, MiB
    resident) of the worker process and all its descendants."""
    me = psutil.Process()
    try:
        tree = [me, *me.children(recursive=True)]
    except psutil.Error:
        tree = [me]
    cpu = rss = 0.0
    seen: dict[int, psutil.Process] = {}
    for process in tree:
        tracked = _tracked.get(process.pid, process)  # its previous CPU times
        try:
            with tracked.oneshot():
                percent = tracked.cpu_percent(None)
                resident = tracked.memory_info().rss
        except psutil.Error:
            continue
        seen[process.pid] = tracked
        cpu += percent
        rss += resident
    _tracked.clear()
    _tracked.update(seen)
    return min(cpu / max(cores, 1), 100.0), rss / 2**20


class UsageSampler:
    """The agent's side: asks every worker in the background, keeps the answers."""

    def __init__(self, client: Any, closed: threading.Event) -> None:
        self.client = client
        self.closed = closed
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, float]] = {}  # worker address -> figures
        self._wanted: list[NodeSpec] = []
        self._ask = threading.Event()
        self._thread: threading.Thread | None = None

    def figures(self, nodes: Sequence[NodeSpec]) -> dict[str, tuple[float, float]]:
        """The last figures of each of ``nodes`` (by name) that answered; asks
        them again in the background."""
        with self._lock:
            self._wanted = [n for n in nodes if n.address]
            last = dict(self._last)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="htcsim-usage", daemon=True)
            self._thread.start()
        self._ask.set()
        return {n.name: last[n.address] for n in nodes if n.address in last}

    def _run(self) -> None:
        while not self.closed.is_set():
            if not self._ask.wait(0.5):
                continue
            self._ask.clear()
            with self._lock:
                wanted = list(self._wanted)
            try:
                answers = self.client.sync(self._ask_all, wanted)
            except Exception:  # the client closed, the scheduler gone: next time
                continue
            with self._lock:
                present = {n.address for n in wanted}
                self._last = {a: f for a, f in self._last.items() if a in present}
                self._last.update(answers)

    async def _ask_all(self, nodes: list[NodeSpec]) -> dict[str, tuple[float, float]]:
        async def ask(node: NodeSpec) -> tuple[str, tuple[float, float] | None]:
            with contextlib.suppress(Exception):  # gone or hung: no figures
                answer = await asyncio.wait_for(
                    self.client.rpc(node.address).run(
                        function=dumps(sample), args=dumps((node.cores,))
                    ),
                    ASK_TIMEOUT_S,
                )
                if answer.get("status") == "OK":
                    cpu, mem = answer["result"]
                    return node.address, (float(cpu), float(mem))
            return node.address, None

        results = await asyncio.gather(*(ask(n) for n in nodes))
        return {address: f for address, f in results if f is not None}
