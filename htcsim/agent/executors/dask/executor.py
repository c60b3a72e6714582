"""The Dask backend: each Dask worker is a node; a job runs on the worker the
kernel chose.

Why Dask distributed: a site already starts Dask workers by hand, with
dask-jobqueue on Slurm/PBS/SGE, with dask-kubernetes or a cloud cluster
manager; the agent needs no daemon of its own on the nodes. A worker
declares its node with Dask resources (``dask worker ... --resources
"cores=16,mem_mib=64000,gpus=2"``; without them its threads and memory limit
are used) and is named by its ``--name``. The kernel places jobs as it does
locally; the agent starts them on that worker only (``Client.run`` of
``htcsim.agent.executors.dask.worker.launch_jobs`` with ``workers=[address]``), where
each runs as a process of its own session, as the local shepherd runs them,
and the worker reports their exits as they come (``wait_exits``). Jobs are
not Dask tasks: the placement is the kernel's, and the scheduler's task
bookkeeping would cost more than a short job.

A worker that leaves, or whose heartbeat is older than the timeout, is a
lost node: nothing more is sent to it or taken from it, and its jobs are
requeued by the policy once they are surely dead. Each worker's jobs run
under a lease (``lease.py``) the agent renews every ``lease_s / 4`` with a
direct call; the worker's guard kills them when it ends. A lost worker's
node stays in the inventory (its jobs running, its cores taken) until
``fence_at``: the last renewal sent, plus ``lease_s``, plus the smallest round
trip measured to that worker, plus ``FENCE_MARGIN_S``; only then is the
engine told that it is gone. So a worker that hangs or is cut off never has
its jobs running there while they run again elsewhere. A lost scheduler
(``scheduler_link.py``) makes every worker lost at once, by the same rule;
the executor then talks through the new client the link makes
(``use_client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client
from distributed.protocol.pickle import dumps

from htcsim.agent.config import NodeSpec
from htcsim.agent.executors.base import (
    JobExit,
    LaunchError,
    LaunchSpec,
    Recovered,
    exit_from_record,
)
from htcsim.agent.executors.dask import stop_grace
from htcsim.agent.executors.dask import worker as dask_worker
from htcsim.agent.executors.dask.scheduler_link import SchedulerLink
from htcsim.agent.executors.dask.usage import UsageSampler

logger = logging.getLogger(__name__)

EXIT_POLL_S = 1.0
"""How long one wait for a worker's exits lasts before it is asked again."""
EXIT_LINGER_S = 0.005
"""After a worker's first exit, how long it waits for more before answering
(one call for exits close together; the loop lingers as long to commit them)."""
RENEWAL_WAIT_LEASES = 6
"""How many leases a renewal may go unanswered before another is sent. One at
a time: a hung worker's last renewal is the one sent just after it hung, so
its jobs can be requeued soon after its heartbeat timeout; a worker that
answers again gets the next one at once."""
SALVAGE_WAIT_S = 5.0
"""How long the agent waits for a lost worker's heir to answer for its
predecessor's exits before requeueing the jobs without them."""
FENCE_MARGIN_S = 1.0
"""Past the end of a lost worker's lease (the agent's reckoning), how long more
the agent waits before it requeues the jobs: the guard's wake-up, its
``killpg`` and the kernel's reaping of the processes, on a loaded machine
(each takes milliseconds; the margin is generous)."""


async def call_on(
    client: Client,
    address: str,
    function: Callable[..., Any],
    *args: Any,
    timeout: float | None = None,
) -> Any:
    """``function(*args)`` on one worker, asked directly (the worker's ``run``
    handler, which ``Client.run`` reaches through the scheduler): one hop
    instead of two, and no load on the scheduler per job. ``timeout``: at most
    this long (``TimeoutError``). A coroutine, on the client's event loop."""
    answer = await asyncio.wait_for(
        client.rpc(address).run(function=_pickled(function), args=dumps(args)), timeout
    )
    if answer.get("status") != "OK":
        raise RuntimeError(f"{address}: {answer.get('exception') or answer}")
    return answer["result"]


@functools.cache
def _pickled(function: Callable[..., Any]) -> bytes:
    """A worker function, pickled once (by reference: its module and name)."""
    return dumps(function)


def run_on(
    client: Client,
    address: str,
    function: Callable[..., Any],
    *args: Any,
    timeout: float | None = None,
) -> Any:
    """``call_on`` from a thread other than the client's event loop."""

    async def call() -> Any:
        return await call_on(client, address, function, *args, timeout=timeout)

    return client.sync(call)


class _Worker:
    """The agent's line to one worker: a thread that renews its lease every
    ``lease_s / 4``, a task that sends it the jobs to start (everything queued
    since the last call, in one call, itself a renewal; none before a
    renewal was answered, so the round trip ``fence_at`` counts is known)
    and one that waits for its exits (``wait_exits``, answered as soon as
    there is one). The two tasks run on the client's event loop, where the
    calls go: no hand-over between threads for each call. All stop when the
    worker is lost or the executor closes."""

    def __init__(self, executor: DaskExecutor, address: str) -> None:
        self.executor = executor
        self.address = address
        self.lease_s = executor.lease_s
        self.lost = threading.Event()
        self._clock = threading.Lock()  # a lease message is stamped, or the worker lost
        self.sent_last = -math.inf
        """The agent's clock at the last lease message sent (answered or not)."""
        self.round_trip = math.inf
        """The smallest round trip of any answered lease message."""
        self.adopted = False  # runs jobs an earlier agent started (``recover``)
        self.fence_note = ""  # how ``fence_at`` reckoned, for the log
        self._leased = threading.Event()  # a lease message was answered
        client = executor.client
        self._loop: asyncio.AbstractEventLoop = client.loop.asyncio_loop  # type: ignore[union-attr]
        self._outbox: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self._renewer = threading.Thread(target=self._renew, name="htcsim-lease", daemon=True)
        self._renewer.start()
        self.tasks = [
            asyncio.run_coroutine_threadsafe(self._send(client), self._loop),
            asyncio.run_coroutine_threadsafe(self._watch(client), self._loop),
        ]

    def launch(self, payloads: list[dict[str, Any]]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the executor is closed
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, payloads)

    def stop(self) -> None:
        """The tasks end now (the worker is lost or the executor closes)."""
        for task in self.tasks:
            with contextlib.suppress(RuntimeError):  # a lost scheduler's client: its loop closed
                task.cancel()

    def _stopped(self) -> bool:
        return self.lost.is_set() or self.executor.closed.is_set()

    def _stamp(self) -> float | None:
        """The send time of a lease message about to go; None once the worker
        is lost (nothing is sent to it then)."""
        with self._clock:
            if self._stopped():
                return None
            self.sent_last = time.monotonic()
            return self.sent_last

    def _answered(self, sent: float) -> None:
        with self._clock:
            self.round_trip = min(self.round_trip, time.monotonic() - sent)
        self._leased.set()

    def fence_at(self) -> float:
        """The worker is lost: no lease message goes to it any more, and this is
        when (the agent's clock) its jobs are surely dead: the last message's
        lease, the smallest round trip and a margin. Now, if none was sent."""
        with self._clock:
            self.lost.set()
            if self.round_trip == math.inf and not self.adopted:
                return time.monotonic()  # no launch went before an answer: none ran
            # no message answered: only jobs adopted at a restart can run
            # there; they are given one lease more for the unknown round trip
            trip = self.round_trip if self.round_trip < math.inf else self.lease_s
            now = time.monotonic()
            sent = self.sent_last if self.sent_last > -math.inf else now
            at = sent + self.lease_s + trip + FENCE_MARGIN_S
            self.fence_note = (
                f"last renewal sent {now - sent:.2f} s ago + lease "
                f"{self.lease_s:.1f} s + smallest round trip {trip:.4f} s + margin "
                f"{FENCE_MARGIN_S:.1f} s"
            )
        return at

    def _renew(self) -> None:
        client = self.executor.client
        every = self.lease_s / 4
        while True:
            sent = self._stamp()
            if sent is None:
                return
            try:  # one at a time: while one is unanswered, its time is the last sent
                run_on(
                    client,
                    self.address,
                    dask_worker.renew,
                    sent,
                    self.lease_s,
                    self.executor.epoch,
                    timeout=RENEWAL_WAIT_LEASES * self.lease_s,
                )
            except Exception:  # hung or gone: the inventory watcher decides
                logger.debug("lease renewal to %s failed", self.address, exc_info=True)
            else:
                self._answered(sent)
            self.lost.wait(max(0.0, sent + every - time.monotonic()))

    async def _send(self, client: Client) -> None:
        while not self._leased.is_set():
            if self._stopped():
                return
            await asyncio.sleep(0.05)
        while not self._stopped():
            try:
                batch = await asyncio.wait_for(self._outbox.get(), 0.5)
            except TimeoutError:
                continue
            while not self._outbox.empty():
                batch.extend(self._outbox.get_nowait())
            sent = self._stamp()
            if sent is None:  # lost: the inventory requeues these jobs
                return
            try:
                await call_on(
                    client,
                    self.address,
                    dask_worker.launch_jobs,
                    batch,
                    sent,
                    self.lease_s,
                    self.executor.epoch,
                )
            except Exception:  # the worker is gone: the inventory requeues its jobs
                if not self._stopped():
                    logger.exception("starting %d jobs on %s failed", len(batch), self.address)
            else:
                self._answered(sent)

    async def _watch(self, client: Client) -> None:
        after = 0
        while not self._stopped():
            try:
                records = await call_on(
                    client, self.address, dask_worker.wait_exits, after, EXIT_POLL_S, EXIT_LINGER_S
                )
            except Exception:  # gone or hung: the inventory watcher decides
                await asyncio.sleep(0.2)
                continue
            for record in records:
                after = max(after, int(record["seq"]))
                self.executor.exited(self.address, record)


class DaskExecutor:
    """Runs jobs on Dask workers (same interface as ``LocalExecutor``)."""

    memory_limit_mode = "off"
    memory_limit_note = (
        "Dask backend: no per-job memory limit; the worker's own --memory-limit applies"
    )

    def __init__(
        self,
        client: Client,
        on_exit: Callable[[JobExit], None],
        stop_grace_s: float = 10.0,
        lease_s: float = 10.0,
        site: str = "",
    ) -> None:
        self.client = client
        self.lease_s = lease_s
        self._started = time.monotonic()
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._where: dict[int, tuple[str, str]] = {}  # running job -> (worker address, run)
        self._runs = itertools.count(1)
        self.site = site  # this agent's store: its runs' tokens begin with it
        self._tag = uuid.uuid4().hex[:8]  # this agent's runs, told from an earlier agent's
        self.epoch = self._tag  # its lease renewals too (another clock: ``lease.py``)
        self._workers: dict[str, _Worker] = {}
        self._to_release: list[int] = []
        self.closed = threading.Event()
        self._releaser = threading.Thread(
            target=self._release_loop, name="htcsim-dask", daemon=True
        )
        self._stop_grace_s = stop_grace_s
        self.link: SchedulerLink | None = None  # set by the agent for a scheduler it did not start
        self._releaser.start()
        self._set_up(client)

    def _set_up(self, client: Client) -> None:
        """What the scheduler gives every worker that registers with it (again
        after a scheduler restart: a new scheduler has none of it)."""
        try:  # a stopping worker's jobs get SIGTERM and a grace (stop_grace.py)
            stop_grace.register(client, self._stop_grace_s)
        except Exception as exc:  # an old scheduler: jobs are killed when a worker stops
            logger.warning("workers' stop grace not set up: %s", exc)

    def status(self) -> dict[str, Any]:
        """The backend's health for /healthz: ``state`` (ok, or degraded while
        the scheduler is lost) and ``reasons``."""
        if self.link is None:
            return {"state": "ok", "reasons": []}
        return self.link.status()

    def use_client(self, client: Client) -> None:
        """The scheduler was reached again through a new client (the old one is
        closed): every call from now on goes through it. The workers of the
        lost scheduler are lost nodes already, their lines to the agent stopped."""
        self._set_up(client)
        self.client = client
        sampler: UsageSampler | None = getattr(self, "_usage", None)
        if sampler is not None:
            sampler.client = client

    # ------------------------------------------------------------------ jobs

    def _worker(self, address: str) -> _Worker:
        with self._lock:
            worker = self._workers.get(address)
            if worker is None:
                worker = self._workers[address] = _Worker(self, address)
            return worker

    def launch_many(self, specs: Sequence[LaunchSpec]) -> list[int | LaunchError]:
        """Start each job on its node's worker (pid 0: remote): one call per
        worker and pass, sent by that worker's thread (the loop does not wait)."""
        out: list[int | LaunchError] = []
        by_worker: dict[str, list[LaunchSpec]] = {}
        for spec in specs:
            if not spec.node:
                out.append(LaunchError(f"job {spec.job_id}: no worker address"))
                continue
            by_worker.setdefault(spec.node, []).append(spec)
            out.append(0)
        for address, group in by_worker.items():
            payloads = []
            with self._lock:
                for spec in group:
                    run = f"{self.site}.{self._tag}-{next(self._runs)}"
                    self._where[spec.job_id] = (address, run)
                    payloads.append(spec.payload() | {"run": run})
            self._worker(address).launch(payloads)
        return out

    def exited(self, address: str, record: dict[str, Any]) -> None:
        """A worker reported an exit: the loop hears of it if the job is still
        placed there (not requeued since, not ended already)."""
        job_id = int(record["job"])
        with self._lock:
            if self._where.get(job_id) != (address, record.get("run", "")):
                return
            del self._where[job_id]
        self._on_exit(exit_from_record(record))

    def signal(self, job_id: int, sig: int) -> bool:
        with self._lock:
            address, _ = self._where.get(job_id, ("", ""))
        if not address:
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

    def declare_lost(self, address: str) -> float:
        """The worker is lost: nothing more is sent to it (no lease renewal
        either). Returns when (``time.monotonic()``) its jobs are surely dead
        (``_Worker.fence_at``): not before then may they run elsewhere."""
        with self._lock:
            worker = self._workers.get(address)
        if worker is None:  # never ran a job of this agent's
            return time.monotonic()
        at = worker.fence_at()  # from here on nothing is sent: a job placed later never starts
        with self._lock:
            placed = sum(a == address for a, _ in self._where.values())
        if not placed:  # none of its jobs to requeue
            return time.monotonic()
        logger.warning(
            "worker %s lost: its %d job(s) are requeued in %.2f s, once fenced (%s)",
            address,
            placed,
            max(0.0, at - time.monotonic()),
            worker.fence_note,
        )
        return at

    def salvage_exits(self, lost: NodeSpec, present: Sequence[NodeSpec]) -> None:
        """Before a lost worker's jobs are requeued: the exits its process
        recorded and could not report (killed between a job's end and the
        agent's next ``wait_exits``), from the worker of the same name if one
        came back, which read them from its node (``exit_journal.py``). Each
        is delivered as any exit, only for the very run placed there: a job
        that ran to its end is not run again."""
        with self._lock:
            placed = {j: run for j, (a, run) in self._where.items() if a == lost.address}
        heir = next((n for n in present if n.name == lost.name and n.address != lost.address), None)
        if not placed or heir is None:
            return
        try:
            table = run_on(self.client, heir.address, dask_worker.job_table, timeout=SALVAGE_WAIT_S)
        except Exception:  # the heir is gone too: the jobs are requeued
            logger.warning("exits of lost worker %s not read from %s", lost.address, heir.address)
            return
        found = 0
        for record in table.get("earlier", ()):
            if placed.get(int(record["job"])) == record.get("run"):
                self.exited(lost.address, record)
                found += 1
        if found:
            logger.info(
                "%d exit(s) of lost worker %s read from its journal (worker %s)",
                found,
                lost.address,
                heir.address,
            )

    def node_lost(self, address: str) -> list[int]:
        """The jobs of a lost worker (the agent requeues them: the inventory
        watcher tells the engine once ``declare_lost``'s time has passed);
        nothing more is sent to it or heard from it."""
        with self._lock:
            jobs = [j for j, (a, _) in self._where.items() if a == address]
            for j in jobs:
                del self._where[j]
            worker = self._workers.pop(address, None)
        if worker is not None:
            worker.lost.set()
            worker.stop()
        return jobs

    def kill_strays(self, address: str) -> None:
        """A worker came back: stop what still runs there that the agent no
        longer places there (its jobs were requeued when it was lost)."""
        with self._lock:
            mine = {j for j, (a, _) in self._where.items() if a == address}
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
        """After a restart: ask every worker what still runs and what ended;
        the exits of jobs still running come as any other's. Jobs no worker
        answers for (the worker gone, or hung) are lost, but not before the
        previous agent's lease has surely ended (``lease_s`` and the margin
        after this agent started: the previous one's last renewal went before):
        a hung worker's guard has killed them by then."""
        tables: dict[str, Any] = self.client.run(dask_worker.job_table, on_error="return")
        running: dict[int, tuple[str, str]] = {}
        exits: dict[int, dict[str, Any]] = {}
        for address, table in tables.items():
            if not isinstance(table, dict):
                continue
            for job_id in table["running"]:
                running[int(job_id)] = (address, str(table["runs"].get(job_id, "")))
            for record in table["exits"]:
                exits[int(record["job"])] = record
            for record in table.get("earlier", ()):  # a worker restarted meanwhile kept them
                if self.site and str(record.get("run", "")).startswith(self.site + "."):
                    exits.setdefault(int(record["job"]), record)
        out = []
        for job_id in job_ids:
            if job_id in running:
                with self._lock:
                    self._where[job_id] = running[job_id]
                self._worker(running[job_id][0]).adopted = True
                out.append(Recovered(job_id, "running", 0, None))
            elif job_id in exits:
                out.append(Recovered(job_id, "exited", None, exit_from_record(exits[job_id], True)))
            else:
                out.append(Recovered(job_id, "lost", None, None))
        fenced_at = self._started + self.lease_s + FENCE_MARGIN_S
        lost = sum(r.status == "lost" for r in out)
        if lost and fenced_at > time.monotonic():
            logger.warning(
                "%d job(s) found on no worker: requeued in %.1f s, once the previous agent's "
                "lease on their worker has ended",
                lost,
                fenced_at - time.monotonic(),
            )
            self.closed.wait(max(0.0, fenced_at - time.monotonic()))
        return out

    def _release_loop(self) -> None:
        while not self.closed.wait(0.5):
            self._flush_releases()

    def node_usage(self, nodes: Sequence[NodeSpec]) -> dict[str, tuple[float, float]]:
        """Each worker's own (CPU percent, MiB) by node name, from the worker
        (``usage.py``; the last answers: the loop never waits for a worker)."""
        sampler: UsageSampler | None = getattr(self, "_usage", None)
        if sampler is None:
            sampler = self._usage = UsageSampler(self.client, self.closed)
        return sampler.figures(nodes)

    def read_log(self, job_id: int, address: str, path: str, tail: int) -> bytes:
        """A job's log from the node that ran it."""
        answer = self.client.run(dask_worker.read_log, path, tail, workers=[address])
        return bytes(answer[address])

    def close(self) -> None:
        self.closed.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()
        self._releaser.join(timeout=5)
        self.client.close()

    def shutdown(self, *, kill_jobs: bool) -> None:
        if kill_jobs:
            for job_id in list(self.running()):
                self.signal(job_id, 9)
        self.close()
