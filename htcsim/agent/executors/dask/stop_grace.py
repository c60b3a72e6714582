"""A stopping Dask worker drains its node: its jobs get SIGTERM and a grace,
then SIGKILL, and nothing new starts there.

Why: deleting a worker's pod (or ``scancel`` of its batch job) sends SIGTERM
to the worker's nanny, which would kill the worker process at once, and the
job guard would then SIGKILL every job: a job's TERM trap (checkpoint, clean
up) never ran. The agent registers two plugins (``register``):

- ``StopGrace`` with every nanny: the nanny awaits its ``teardown`` before it
  stops the worker, and the teardown asks its worker to drain
  (``worker.stop_jobs``: SIGTERM, ``grace_s``, SIGKILL). If the worker
  process is gone already (``scancel`` signals every process of the batch
  job, SIGKILL, the OOM killer), the teardown gives up at once: the job guard
  killed its jobs when the worker's pipe closed.
- ``NoNannyStopGrace`` with every worker: a worker without a nanny
  (``dask worker --no-nanny``) ends its event loop on SIGTERM without closing
  (no plugin teardown runs), so this plugin puts its own SIGTERM handler in
  front of ``dask worker``'s: it drains, then passes the signal on (a second
  SIGTERM goes on at once). A worker with a nanny leaves this to the nanny.

How a job that ends during the drain is judged (``worker.drained``): with
an exit status of 128 or less it ended on its own and is recorded as it
ended (``exit 0``: completed); ended by a signal, or with a status above 128
(a shell's ``128 + N`` for signal N; ``exit 143`` after a checkpoint on
SIGTERM), it was stopped by the drain and the worker's loss requeues it by
the policy (or ends it ``node_fail``), as for any lost node, and never while
it still runs. The grace must end before the platform's own (a pod's
``terminationGracePeriodSeconds``), with ``worker.STOP_KILL_WAIT_S`` and
``worker.STOP_RELEASE_WAIT_S`` to spare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from distributed.diagnostics.plugin import NannyPlugin, WorkerPlugin
from distributed.protocol.pickle import dumps

from htcsim.agent.executors.dask import worker as dask_worker

logger = logging.getLogger(__name__)

PLUGIN_NAME = "htcsim-stop-grace"
WORKER_PLUGIN_NAME = "htcsim-stop-grace-no-nanny"
WORKER_GONE_POLL_S = 0.1
"""How often a nanny's teardown looks whether its worker process is still there."""


class StopGrace(NannyPlugin):
    """Before the nanny stops its worker: the worker drains its node."""

    name = PLUGIN_NAME

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s

    async def teardown(self, nanny: Any) -> None:
        address = getattr(nanny, "worker_address", None)
        if not address or not nanny.is_alive():
            return
        call = asyncio.ensure_future(
            nanny.rpc(address).run(
                function=dumps(dask_worker.stop_jobs), args=dumps((self.grace_s,))
            )
        )
        try:
            while not call.done():
                if not nanny.is_alive():  # killed meanwhile: its guard killed the jobs
                    return
                await asyncio.wait({call}, timeout=WORKER_GONE_POLL_S)
            answer = call.result()
            if isinstance(answer, dict) and answer.get("status") not in (None, "OK"):
                logger.warning("worker %s did not drain: %s", address, answer.get("exception"))
        except (TimeoutError, OSError) as exc:  # gone as we called
            logger.warning("worker %s did not drain: %s", address, exc)
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await call


class NoNannyStopGrace(WorkerPlugin):
    """A worker without a nanny drains on SIGTERM before it stops."""

    name = WORKER_PLUGIN_NAME

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._previous: Any = None
        self._handler: Any = None

    def setup(self, worker: Any) -> None:
        if getattr(worker, "nanny", None):  # the nanny's StopGrace drains it
            return
        if threading.current_thread() is not threading.main_thread():
            return  # a worker in a thread of another program: its signals are not ours
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        drains: list[asyncio.Task[None]] = []

        async def drain(signum: int, frame: FrameType | None) -> None:
            try:
                await dask_worker.stop_jobs(self.grace_s)
            finally:
                _pass_on(previous, signum, frame)

        def on_term(signum: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGTERM, previous)  # a second SIGTERM goes on at once
            loop.call_soon_threadsafe(lambda: drains.append(loop.create_task(drain(signum, frame))))

        signal.signal(signal.SIGTERM, on_term)
        self._previous, self._handler = previous, on_term

    def teardown(self, worker: Any) -> None:
        if self._handler is not None and signal.getsignal(signal.SIGTERM) is self._handler:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous)
        self._handler = None

    def __getstate__(self) -> dict[str, Any]:
        return {"grace_s": self.grace_s, "_previous": None, "_handler": None}


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    """The signal, drained, goes where it went before: ``dask worker``'s
    handler, or the default action (the process ends)."""
    if callable(previous):
        previous(signum, frame)
    elif previous in (signal.SIG_DFL, None):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def register(client: Any, grace_s: float) -> None:
    """Both plugins, with every nanny and every worker (those that join later too)."""
    client.register_plugin(StopGrace(grace_s), name=PLUGIN_NAME)
    client.register_plugin(NoNannyStopGrace(grace_s), name=WORKER_PLUGIN_NAME)
