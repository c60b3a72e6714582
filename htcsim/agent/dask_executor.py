"""The Dask backend: each Dask worker is a node, each job a task pinned to the
worker the kernel chose.

Why Dask distributed: a site already starts Dask workers by hand, with
dask-jobqueue on Slurm/PBS/SGE, with dask-kubernetes or a cloud cluster
manager; the agent needs no daemon of its own on the nodes. A worker
declares its node with Dask resources (``dask worker ... --resources
"cores=16,mem_mib=64000,gpus=2"``; without them its threads and memory limit
are used) and is named by its ``--name``. The kernel places jobs as it does
locally; the job's task may run on that worker only (``workers=[address]``,
``allow_other_workers=False``), where ``htcsim.agent.dask_worker`` runs it
as a process of its own session, as the local shepherd does.

A worker that leaves, or whose heartbeat is older than the timeout, is a
lost node: its jobs are requeued by the policy and their tasks cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, Future

from htcsim.agent import dask_worker
from htcsim.agent.config import NodeSpec
from htcsim.agent.executor import (
    JobExit,
    LaunchError,
    LaunchSpec,
    Recovered,
    exit_from_record,
)

logger = logging.getLogger(__name__)


def dask_nodes(client: Client, heartbeat_timeout_s: float) -> list[NodeSpec]:
    """The nodes the workers declare, in name order; workers not heard from
    within ``heartbeat_timeout_s`` are left out (hung or gone)."""
    now = time.time()
    out = []
    for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
        if now - float(info.get("last_seen", now)) > heartbeat_timeout_s:
            continue
        resources = info.get("resources") or {}
        cores = int(resources.get("cores", info.get("nthreads", 1)))
        mem_mib = int(resources.get("mem_mib", int(info.get("memory_limit") or 0) >> 20))
        gpus = int(resources.get("gpus", 0))
        name = str(info.get("name", address))
        out.append(NodeSpec(name, cores, mem_mib, gpus, (), address))
    return sorted(out, key=lambda n: n.name)


class DaskExecutor:
    """Runs jobs on Dask workers (same interface as ``LocalExecutor``)."""

    memory_limit_mode = "off"
    memory_limit_note = (
        "Dask backend: no per-job memory limit; the worker's own --memory-limit applies"
    )

    def __init__(self, client: Client, on_exit: Callable[[JobExit], None]) -> None:
        self.client = client
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._where: dict[int, str] = {}  # job -> worker address
        self._adopted: set[int] = set()  # re-adopted after a restart: no future, polled
        self._to_release: list[int] = []
        self._closed = threading.Event()
        self._finished: list[tuple[int, Future]] = []
        self._finished_lock = threading.Condition()
        self._poller = threading.Thread(target=self._poll_adopted, name="htcsim-dask", daemon=True)
        self._poller.start()
        self._collector = threading.Thread(target=self._collect, name="htcsim-exits", daemon=True)
        self._collector.start()

    # ------------------------------------------------------------------ jobs

    def launch_many(self, specs: Sequence[LaunchSpec]) -> list[int | LaunchError]:
        """Submit each job as a task pinned to its node's worker (pid 0: remote).

        One ``Client.map`` per worker: the scheduler gets one graph update per
        worker and pass, not one per job.
        """
        out: list[int | LaunchError] = []
        by_worker: dict[str, list[LaunchSpec]] = {}
        for spec in specs:
            if not spec.node:
                out.append(LaunchError(f"job {spec.job_id}: no worker address"))
                continue
            by_worker.setdefault(spec.node, []).append(spec)
            out.append(0)
        for address, group in by_worker.items():
            payloads = [spec.payload() for spec in group]
            tag = uuid.uuid4().hex[:8]
            futures = self.client.map(
                dask_worker.run_job,
                payloads,
                key=[f"htcsim-job-{spec.job_id}-{tag}" for spec in group],
                workers=[address],
                allow_other_workers=False,
                pure=False,
                retries=0,
            )
            with self._lock:
                for spec, future in zip(group, futures, strict=True):
                    self._futures[spec.job_id] = future
                    self._where[spec.job_id] = address
            for spec, future in zip(group, futures, strict=True):
                future.add_done_callback(lambda f, j=spec.job_id: self._done(j, f))
        return out

    def _done(self, job_id: int, future: Future) -> None:
        """Dask's callback thread: only note it (fetching the result here would
        cost one round trip per job on that single thread)."""
        with self._finished_lock:
            self._finished.append((job_id, future))
            self._finished_lock.notify()

    def _collect(self) -> None:
        """Fetch the results of finished tasks in batches, one gather per batch."""
        while not self._closed.is_set():
            with self._finished_lock:
                self._finished_lock.wait_for(lambda: self._finished or self._closed.is_set())
                batch, self._finished = self._finished, []
            mine = []
            with self._lock:
                for job_id, future in batch:
                    if self._futures.get(job_id) is future:  # not cancelled (node lost)
                        del self._futures[job_id]
                        self._where.pop(job_id, None)
                        mine.append((job_id, future))
            done = [(j, f) for j, f in mine if f.status == "finished"]
            for job_id, future in mine:
                if future.status != "finished":
                    logger.error("job %s: its task ended %s", job_id, future.status)
                    self._on_exit(JobExit(job_id, -1, 0, time.time(), -1.0, -1.0))
            if not done:
                continue
            try:
                records = self.client.gather([f for _, f in done], errors="skip")
            except Exception:
                logger.exception("fetching %d job exits failed", len(done))
                records = []
            got = {int(r["job"]): r for r in records}
            for job_id, _ in done:
                record = got.get(job_id)
                if record is None:
                    self._on_exit(JobExit(job_id, -1, 0, time.time(), -1.0, -1.0))
                else:
                    self._on_exit(exit_from_record(record))

    def signal(self, job_id: int, sig: int) -> bool:
        with self._lock:
            address = self._where.get(job_id)
        if address is None:
            return False
        try:
            answer = self.client.run(
                dask_worker.signal_job, job_id, int(sig), workers=[address], on_error="return"
            )
        except Exception:  # the worker is gone: nothing runs there any more
            return False
        return bool(answer.get(address) is True)

    def running(self) -> dict[int, int]:
        with self._lock:
            return dict.fromkeys(self._where, 0)

    def node_lost(self, address: str) -> list[int]:
        """The jobs of a lost worker; their tasks are cancelled (never run twice)."""
        with self._lock:
            jobs = [j for j, a in self._where.items() if a == address]
            futures = [self._futures.pop(j) for j in jobs if j in self._futures]
            for j in jobs:
                self._where.pop(j, None)
                self._adopted.discard(j)
        if futures:
            self.client.cancel(futures)
        return jobs

    def kill_strays(self, address: str) -> None:
        """A worker came back: stop what still runs there that the agent no
        longer places there (its jobs were requeued when it was lost)."""
        with self._lock:
            mine = {j for j, a in self._where.items() if a == address}
        with contextlib.suppress(Exception):
            table = self.client.run(dask_worker.job_table, workers=[address])[address]
            for job_id in table["running"]:
                if int(job_id) not in mine:
                    self.client.run(dask_worker.signal_job, int(job_id), 9, workers=[address])

    def retire(self, address: str) -> None:
        """Ask the scheduler to retire a drained worker (it closes once its
        tasks are done; in the background, the loop does not wait for it)."""

        def retire() -> None:
            try:
                self.client.retire_workers([address], close_workers=True)
            except Exception:
                logger.exception("retiring worker %s failed", address)

        threading.Thread(target=retire, name="htcsim-retire", daemon=True).start()

    def release_many(self, job_ids: Sequence[int]) -> None:
        """Recorded exits the workers may forget: sent in the background, every
        half second (a round trip to every worker per commit would cost the loop)."""
        with self._lock:
            self._to_release.extend(int(j) for j in job_ids)

    def _flush_releases(self) -> None:
        with self._lock:
            ids, self._to_release = self._to_release, []
        if ids:
            try:
                self.client.run(dask_worker.release_jobs, ids, on_error="return")
            except Exception:  # a worker gone: what it held went with it
                logger.debug("releasing %d exits failed", len(ids), exc_info=True)

    def release(self, job_id: int) -> None:
        self.release_many([job_id])

    def recover(self, job_ids: Sequence[int]) -> list[Recovered]:
        """After a restart: ask every worker what still runs and what ended."""
        tables: dict[str, Any] = self.client.run(dask_worker.job_table, on_error="return")
        running: dict[int, str] = {}
        exits: dict[int, dict[str, Any]] = {}
        for address, table in tables.items():
            if not isinstance(table, dict):
                continue
            for job_id in table["running"]:
                running[int(job_id)] = address
            for record in table["exits"]:
                exits[int(record["job"])] = record
        out = []
        for job_id in job_ids:
            if job_id in running:
                with self._lock:
                    self._where[job_id] = running[job_id]
                    self._adopted.add(job_id)
                out.append(Recovered(job_id, "running", 0, None))
            elif job_id in exits:
                out.append(Recovered(job_id, "exited", None, exit_from_record(exits[job_id], True)))
            else:
                out.append(Recovered(job_id, "lost", None, None))
        return out

    def _poll_adopted(self) -> None:
        """Adopted jobs have no future: their exits are read from the workers."""
        while not self._closed.wait(0.5):
            self._flush_releases()
            with self._lock:
                adopted = {j: self._where[j] for j in self._adopted if j in self._where}
            if not adopted:
                continue
            try:
                tables = self.client.run(
                    dask_worker.job_table, workers=sorted(set(adopted.values())), on_error="return"
                )
            except Exception:  # a worker gone: the inventory watcher handles it
                continue
            for job_id, address in adopted.items():
                table = tables.get(address)
                if not isinstance(table, dict):
                    continue
                record = next((r for r in table["exits"] if int(r["job"]) == job_id), None)
                if record is not None:
                    with self._lock:
                        self._adopted.discard(job_id)
                        self._where.pop(job_id, None)
                    self._on_exit(exit_from_record(record))

    def read_log(self, job_id: int, address: str, path: str, tail: int) -> bytes:
        """A job's log from the node that ran it."""
        answer = self.client.run(dask_worker.read_log, path, tail, workers=[address])
        return bytes(answer[address])

    def close(self) -> None:
        self._closed.set()
        with self._finished_lock:
            self._finished_lock.notify()
        self._poller.join(timeout=5)
        self._collector.join(timeout=5)
        self.client.close()

    def shutdown(self, *, kill_jobs: bool) -> None:
        if kill_jobs:
            for job_id in list(self.running()):
                self.signal(job_id, 9)
        self.close()


class InventoryWatcher:
    """Polls the Dask scheduler for its workers and tells the engine when the
    node inventory changes (a worker joined, left or stopped answering)."""

    def __init__(
        self,
        client: Client,
        current: Sequence[NodeSpec],
        on_change: Callable[[list[NodeSpec]], Any],
        heartbeat_timeout_s: float,
        every_s: float = 0.25,
        *,
        empty_ok: bool = False,
    ) -> None:
        self.client = client
        self._empty_ok = empty_ok  # a pool may shrink to no worker at all
        self._seen = _identity(current)
        self._on_change = on_change
        self._timeout = heartbeat_timeout_s
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="htcsim-inventory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                nodes = dask_nodes(self.client, self._timeout)
            except (OSError, ValueError, RuntimeError):
                continue
            if not nodes and not self._empty_ok:
                continue  # no worker at all: keep the last inventory (its jobs stay)
            identity = _identity(nodes)
            if identity != self._seen:
                self._seen = identity
                self._on_change(nodes)

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
