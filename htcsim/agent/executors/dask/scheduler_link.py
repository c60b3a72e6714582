"""The agent's connection to a Dask scheduler it did not start: noticed when
lost, made again with back-off, and reported while it is down.

Why a part of its own: the scheduler is the one process every worker and the
agent go through to find each other. When it is killed, its workers leave
(Dask workers do not outlive their scheduler; whatever restarts them, a
Kubernetes Deployment or systemd's ``Restart=always``, brings them back) and
a ``Client`` left to itself retries for its connect timeout, then closes for
good, while its cached view of the workers goes stale. The agent would see
nothing: jobs shown running on workers that are gone, no log line, a healthy
``/healthz``. So the link

- notices the loss at once when the connection closes, and within
  ``heartbeat_s`` when the scheduler stops answering (a hung process, a cut
  network): the inventory watcher then treats every node as lost, under the
  same fencing rule as one lost worker (no job requeued before its lease has
  surely ended);
- reconnects: the old ``Client`` retries by itself for its timeout (and a
  hung scheduler may answer it again); once it gave up, new clients with the
  same TLS credentials, with exponential back-off from ``BACKOFF_FIRST_S``
  to ``BACKOFF_MAX_S``, for as long as it takes;
- says ``degraded``, with the reason, the time and the attempts, until it is
  connected again (``status``), and counts each loss and reconnection.

The agent keeps accepting and storing submissions the whole time: nothing of
this touches the store or the scheduling loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from distributed import Client

logger = logging.getLogger(__name__)

UNREACHABLE = (OSError, TimeoutError, RuntimeError, ValueError, asyncio.CancelledError)
"""What asking a scheduler that is gone, hung or being reconnected to raises
(``CommClosedError`` is an ``OSError``; a reconnecting client cancels calls)."""
BACKOFF_FIRST_S = 0.5
"""The wait before the second attempt to reconnect (the first goes at once)."""
BACKOFF_MAX_S = 15.0
"""The longest wait between two attempts: a scheduler restarted by its
supervisor is found within this long of its start."""
CONNECT_TIMEOUT_S = 10.0
"""How long one attempt may take (a TLS handshake on a loaded machine)."""


class SchedulerLink:
    """The current ``Client`` to ``address`` and whether it reaches the scheduler."""

    def __init__(
        self,
        address: str,
        security: Any,
        client: Client,
        heartbeat_s: float,
        *,
        on_reconnect: Callable[[Client], None] | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """``client``: connected already (the agent's start); ``on_reconnect``
        is called with each new client before it is used (the executor takes
        it); ``on_change(connected)`` with each loss and reconnection (metrics)."""
        self.address = address
        self.security = security
        self.client = client
        self.heartbeat_s = heartbeat_s
        self.on_reconnect = on_reconnect
        self.on_change = on_change
        self._lock = threading.Lock()
        self._last_answer = time.monotonic()
        self.lost_since: float | None = None  # wall clock, for /healthz
        self.reason = ""
        self.attempts = 0
        self.next_attempt: float | None = None  # monotonic
        self._closed = threading.Event()
        self._reconnector: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        with self._lock:
            return self.lost_since is None

    def workers(self) -> dict[str, Any] | None:
        """The scheduler's view of its workers (``identity``'s ``workers``), or
        None while the connection is lost (found lost by this call, or being
        made again). Never blocks longer than the heartbeat interval."""
        with self._lock:
            if self.lost_since is not None:
                return None
            client = self.client
        if client.status != "running":  # the connection closed: the scheduler is gone
            self._lose(f"its connection closed ({client.status})")
            return None
        wait_s = min(self.heartbeat_s, CONNECT_TIMEOUT_S)
        try:
            info = identity(client, wait_s)
        except UNREACHABLE as exc:
            silent = time.monotonic() - self._last_answer
            if silent >= self.heartbeat_s:
                self._lose(f"no answer for {silent:.1f} s ({type(exc).__name__})")
            return None
        self._last_answer = time.monotonic()
        return dict(info.get("workers") or {})

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self.lost_since is not None or self._closed.is_set():
                return
            self.lost_since = time.time()
            self.reason = reason
            self.attempts = 0
            old = self.client
            self._reconnector = threading.Thread(
                target=self._reconnect, args=(old,), name="htcsim-dask-reconnect", daemon=True
            )
        logger.error(
            "Dask scheduler %s lost: %s; every node is lost (its jobs requeued once "
            "fenced), submissions are still taken; reconnecting",
            self.address,
            reason,
        )
        if self.on_change is not None:
            self.on_change(False)
        self._reconnector.start()

    def _reconnect(self, old: Client) -> None:
        """Until the scheduler answers again: the old client while it retries by
        itself (a ``Client`` whose connection closed reconnects for its
        timeout) or still holds its connection (a hung scheduler), then new
        clients; one try at once, then after a wait that doubles up to
        ``BACKOFF_MAX_S``."""
        client = old
        wait_s = BACKOFF_FIRST_S
        while not self._closed.is_set():
            with self._lock:
                self.attempts += 1
                attempt = self.attempts
            status = client.status
            if status in ("closing", "closed"):  # the old one gave up: a new one
                try:
                    client = Client(
                        self.address,
                        timeout=f"{CONNECT_TIMEOUT_S}s",
                        set_as_default=False,
                        security=self.security,
                    )
                except Exception as exc:  # refused, timed out, TLS: the next attempt
                    logger.info("Dask scheduler %s: attempt %d: %s", self.address, attempt, exc)
            elif status == "running":
                try:
                    identity(client, CONNECT_TIMEOUT_S)
                except UNREACHABLE:
                    pass
                else:
                    self._reached(client, old, attempt)
                    return
            with self._lock:
                self.next_attempt = time.monotonic() + wait_s
            if self._closed.wait(wait_s):
                break
            wait_s = min(2 * wait_s, BACKOFF_MAX_S)
        if client is not old:
            _close_quietly(client)

    def _reached(self, client: Client, old: Client, attempt: int) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect(client)
        with self._lock:
            down_s = time.time() - (self.lost_since or time.time())
            self.client = client
            self._last_answer = time.monotonic()
            self.lost_since = None
            self.next_attempt = None
        if client is not old:
            threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        logger.warning(
            "Dask scheduler %s reached again after %.1f s (attempt %d): the inventory "
            "is rebuilt from the workers that register",
            self.address,
            down_s,
            attempt,
        )
        if self.on_change is not None:
            self.on_change(True)

    def status(self) -> dict[str, Any]:
        """``state`` ok, or degraded with the reason, since when, the attempts."""
        with self._lock:
            if self.lost_since is None:
                return {"state": "ok", "reasons": []}
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.lost_since))
            down_s = time.time() - self.lost_since
            after = ""
            if self.next_attempt is not None:
                after = f", next in {max(0.0, self.next_attempt - time.monotonic()):.1f} s"
            reason = (
                f"the Dask scheduler {self.address} is unreachable since {since} "
                f"({down_s:.0f} s: {self.reason}); reconnecting, {self.attempts} "
                f"attempt(s){after}"
            )
        return {"state": "degraded", "reasons": [reason]}

    def close(self) -> None:
        """No reconnection from now on (the executor closes the client it uses)."""
        self._closed.set()


def identity(client: Client, timeout_s: float) -> dict[str, Any]:
    """The scheduler's ``identity`` with every worker, asked now (the client's
    ``scheduler_info`` answers from its cache when the scheduler is down)."""

    async def ask() -> Any:
        return await asyncio.wait_for(client.scheduler.identity(n_workers=-1), timeout_s)

    return dict(client.sync(ask))


def _close_quietly(client: Client) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=2)
