"""The agent's watch over its shepherd: one connection at a time, a heartbeat,
and a restart when the shepherd dies or hangs.

Why a thread of its own: the shepherd is the agent's only way to run jobs,
and a dead or hung one must be noticed within a second, not when the next
launch times out. The supervisor reads the shepherd's messages, pings it
every ``PING_S`` and, when the connection closes (the worker died) or a ping
is unanswered for ``HANG_S`` (the worker hangs: stopped, deadlocked), kills
the worker (SIGKILL through a pidfd opened for the pid *and* start time the
worker announced, so a reused pid is never hit) and connects again at the
same socket (a worker that works, runnable or using CPU, gets ``BUSY_HANG_S``
before it counts as hung). Normally the shepherd's keeper has started a new worker
meanwhile, which adopted the jobs; if the keeper is gone too (or does not
produce a worker within ``KEEPER_GRACE_S``, when it is killed) the supervisor
starts a new shepherd, which kills the jobs it cannot adopt and reports them
lost. Either way the executor is told (``on_connect``) and reconciles with
what the new worker says, then messages the old worker may not have
processed are sent again: a message counts as processed once the ``pong``
of a ping sent after it has come back (the worker handles messages in
order).

Health: ``connected`` (``ok``, or ``degraded`` while the keeper is gone),
``restarting`` (``degraded``, ``down`` after ``DOWN_AFTER_S``), ``displaced``
(another agent took the shepherd over) and ``closed``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from htcsim.agent.executors.base import LaunchError
from htcsim.agent.executors.local.proc import Process, cpu_ticks
from htcsim.agent.executors.local.runfiles import (
    IDENTITY_FILE,
    LOG_FILE,
    SECRET_FILE,
    socket_path,
    unix_address,
)

logger = logging.getLogger(__name__)

PING_S = 0.1
"""How often the supervisor pings the worker."""
HANG_S = 0.5
"""A worker that leaves a ping (or a message being sent to it) unanswered this
long, and is not working (stopped, or blocked without using the CPU), hangs."""
BUSY_HANG_S = 5.0
"""A worker that works (runnable, or its CPU time growing) but leaves a ping
unanswered this long hangs too."""
KEEPER_GRACE_S = 3.0
"""How long a live keeper may take to have a new worker answer."""
HELLO_PATIENCE_S = 15.0
"""How long a live, running worker may take to answer a new connection (it may
be killing the processes of jobs it could not adopt first)."""
DOWN_AFTER_S = 10.0
"""Restarting for longer than this is ``down``, not ``degraded``."""
REFUSALS = 3
"""Connections closed before the hello by the same live worker that mean a refusal."""
SEND_TIMEOUT_S = 30.0
"""No single send to the worker waits longer (a hung one is killed well before)."""


class Closed(Exception):
    """The executor was closed while the supervisor waited."""


@dataclass
class Restart:
    """One restart of the shepherd, as the engine records it."""

    time: float
    reason: str
    pid: int
    """The new worker's pid."""
    fresh: bool
    """A new shepherd (keeper and worker) was started: the jobs it could not
    adopt were killed and are reported lost."""


@dataclass
class Peers:
    """The shepherd's processes, as the worker's hello (or identity file) names them."""

    worker: Process | None
    keeper: Process | None

    def close(self) -> None:
        for p in (self.worker, self.keeper):
            if p is not None:
                p.close()


def _process(entry: Any) -> Process | None:
    """A Process from ``[pid, start]`` or ``{"pid", "start"}``, None if gone or malformed."""
    with contextlib.suppress(TypeError, ValueError, KeyError, IndexError):
        if isinstance(entry, dict):
            return Process.open(int(entry["pid"]), int(entry["start"]))
        if entry:
            return Process.open(int(entry[0]), int(entry[1]))
    return None


def read_identity(run_dir: Path) -> Peers:
    """The worker and keeper named in the run directory's identity file (written
    by each worker at its start; the directory is the agent's alone)."""
    try:
        data = json.loads((run_dir / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return Peers(None, None)
    if not isinstance(data, dict):
        return Peers(None, None)
    return Peers(_process(data.get("worker")), _process(data.get("keeper")))


@dataclass
class Connection:
    """One connection to a worker, after its handshake."""

    sock: socket.socket
    hello: dict[str, Any]
    peers: Peers
    buf: bytes = b""
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    sending_since: float | None = None

    @property
    def pid(self) -> int:
        return int(self.hello["pid"])

    def send(self, data: bytes, *, wait: bool = True) -> bool:
        """Send ``data`` whole; False if the lock was busy and ``wait`` is False.
        Raises OSError if the connection is broken."""
        if not self.send_lock.acquire(blocking=wait):
            return False
        try:
            self.sending_since = time.monotonic()
            self.sock.sendall(data)
            return True
        finally:
            self.sending_since = None
            self.send_lock.release()

    def read(self) -> list[dict[str, Any]] | None:
        """The complete lines available now (the socket is readable); None at EOF."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, TimeoutError):
            return []
        except OSError:
            data = b""
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                message = json.loads(line) if line.strip() else None
            except ValueError:
                logger.error("the shepherd sent a line that is not JSON: %r", line[:200])
                continue
            if isinstance(message, dict):
                out.append(message)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.peers.close()


class Supervisor:
    """Keeps the executor connected to a live shepherd (see the module docstring).

    ``start_shepherd`` starts a new shepherd process; ``on_message`` gets every
    message but the heartbeat's (reader thread); ``on_connect(hello, why)`` is
    called on each new connection after a lost one, before anything else is
    sent on it, and returns the messages to send first (reconciliation);
    ``on_restart`` is told of each restart once the new connection serves;
    ``when_idle(action)`` runs ``action`` if no job runs and no launch can
    start meanwhile, and says whether it did (a worker whose keeper died is
    then replaced by a whole new shepherd, restoring the keeper's protection).
    """

    def __init__(
        self,
        run_dir: Path,
        secret: str,
        start_shepherd: Callable[[], subprocess.Popen[bytes]],
        on_message: Callable[[dict[str, Any]], None],
        on_connect: Callable[[dict[str, Any], str], list[dict[str, Any]]],
        on_restart: Callable[[Restart], None] | None = None,
        connect_timeout_s: float = 20.0,
        when_idle: Callable[[Callable[[], None]], bool] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self._secret = secret
        self._start_shepherd = start_shepherd
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_restart = on_restart
        self._when_idle = when_idle
        self._timeout = connect_timeout_s
        self._cond = threading.Condition()
        self._state = "restarting"
        self._reason = "connecting to the shepherd"
        self._since = time.monotonic()
        self._closed = False
        self._ping_seq = 0
        self._pings: dict[int, float] = {}  # seq -> when sent, unanswered
        self._unconfirmed: list[tuple[int, dict[str, Any]]] = []  # (ping seq that confirms, msg)
        self._launched: list[subprocess.Popen[bytes]] = []
        self._refusals: tuple[tuple[int, int] | None, int] = (None, 0)
        self._ticks: int | None = None  # the worker's CPU time, last sampled
        self._progress_at = time.monotonic()  # when it last grew
        self._own_reason = False  # the supervisor itself killed the last worker: its reason holds
        self.restarts = 0
        self.last_restart: float | None = None
        self.last_restart_reason = ""
        self.conn = self._establish(first=True)
        self._state = "connected"
        self._thread = threading.Thread(target=self._run, name="htcsim-shepherd", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------------ sending

    def send(self, message: dict[str, Any]) -> None:
        """Send a message that must not be lost (a signal, a release): it is sent
        again to the next worker unless a pong shows this one processed it, and
        kept, to be sent, while no worker is connected. Raises LaunchError if
        the executor is closed."""
        data = json.dumps(message).encode() + b"\n"
        while True:
            with self._cond:
                if self._closed:
                    raise LaunchError("the executor is closed")
                conn = self.conn if self._state == "connected" else None
                if conn is None:  # sent by the restart, to the new worker
                    self._unconfirmed.append((self._ping_seq + 1, message))
                    return
            with conn.send_lock:
                with self._cond:  # tagged under the send lock: no ping overtakes it
                    if self._state != "connected" or self.conn is not conn:
                        continue  # a restart came in between: look again
                    self._unconfirmed.append((self._ping_seq + 1, message))
                conn.sending_since = time.monotonic()
                try:
                    conn.sock.sendall(data)
                except OSError:
                    pass  # the supervisor notices; the restart sends it again
                finally:
                    conn.sending_since = None
                return

    def is_current(self, conn: Connection) -> bool:
        """Whether ``conn`` is the connection serving now."""
        with self._cond:
            return self._state == "connected" and self.conn is conn

    def connection(self) -> Connection:
        """The current connection, waiting while the shepherd restarts; LaunchError
        if there will be none (closed, or displaced by another agent)."""
        with self._cond:
            while self._state != "connected":
                if self._closed or self._state == "displaced":
                    raise LaunchError(self._reason)
                self._cond.wait(0.5)
            return self.conn

    # ------------------------------------------------------------------ health

    def status(self) -> dict[str, Any]:
        """``state`` (ok, degraded, down), ``reasons``, the processes, the restarts."""
        with self._cond:
            state, reason, since, conn = self._state, self._reason, self._since, self.conn
        reasons: list[str] = []
        keeper = conn.peers.keeper
        if state == "connected":
            health = "ok"
            if keeper is None or keeper.ended():
                health = "degraded"
                reasons.append(
                    f"the shepherd's keeper is gone: were the worker {conn.pid} to die, "
                    "its jobs would be killed and requeued"
                )
        elif state == "restarting":
            long = time.monotonic() - since > DOWN_AFTER_S
            health = "down" if long else "degraded"
            reasons.append(f"restarting the shepherd: {reason}")
        else:
            health = "down"
            reasons.append(reason)
        return {
            "state": health,
            "reasons": reasons,
            "connected": state == "connected",
            "pid": conn.pid,
            "keeper": keeper.pid if keeper is not None else None,
            "restarts": self.restarts,
            "last_restart": self.last_restart,
            "last_restart_reason": self.last_restart_reason,
        }

    # ------------------------------------------------------------------ life

    def close(self) -> None:
        """Stop supervising and disconnect; the shepherd and its jobs live on."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._state, self._reason = "closed", "the executor is closed"
            self._cond.notify_all()
            conn = self.conn
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        conn.close()
        for popen in self._launched:
            popen.poll()  # reap a shepherd of ours that ended

    def _run(self) -> None:
        while True:
            why = self._serve(self.conn)
            with self._cond:
                if self._closed or self._state == "displaced":
                    return
            self._mark_restarting(why)
            logger.error("%s; restarting it", why)
            try:
                conn = self._establish(first=False, previous=self.conn)
            except Closed:
                return
            except LaunchError as exc:  # a shepherd of another secret took the directory
                with self._cond:
                    self._state, self._reason = "displaced", str(exc)
                    self._cond.notify_all()
                logger.error("%s", exc)
                return
            self._switch(conn, why)

    def _mark_restarting(self, why: str) -> None:
        with self._cond:
            if self._state == "connected":
                self._state, self._reason, self._since = "restarting", why, time.monotonic()

    def _switch(self, conn: Connection, why: str) -> None:
        """Serve ``conn``: reconcile, send again what the last worker may not have
        processed, and only then let other threads send."""
        fresh = int(conn.hello.get("generation") or 0) == 0  # a new keeper's first worker
        try:
            first = self._on_connect(conn.hello, why)
        except Exception:  # the supervisor must survive a bad callback
            logger.exception("reconciling with the restarted shepherd failed")
            first = []
        with self._cond:
            old = self.conn
            self.conn = conn
            self._pings.clear()
            again = [m for _, m in self._unconfirmed]
            self._unconfirmed = []
            with contextlib.suppress(OSError), conn.send_lock:
                for message in [*first, *again]:
                    if message in again:
                        self._unconfirmed.append((self._ping_seq + 1, message))
                    conn.sock.sendall(json.dumps(message).encode() + b"\n")
            # the agent's own finding for a hang; the keeper's account of a death
            # (how the worker ended); for a new shepherd, that it replaced one
            restart = (conn.hello.get("restart") or {}).get("reason") or why
            if self._own_reason:
                restart = why
            elif fresh:
                restart = f"{why}; a new shepherd replaced it"
            self._own_reason = False
            self.restarts += 1
            self.last_restart = time.time()
            self.last_restart_reason = restart
            self._state, self._reason = "connected", ""
            self._cond.notify_all()
        old.close()
        logger.warning("the shepherd was restarted (%s): worker %s serves", restart, conn.pid)
        if self._on_restart is not None:
            self._on_restart(Restart(time.time(), restart, conn.pid, fresh))

    # ------------------------------------------------------------------ serving

    def _serve(self, conn: Connection) -> str:
        """Read and ping until the connection is lost; returns why."""
        next_ping = time.monotonic()
        next_idle_check = next_ping + 1.0
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        while True:
            with self._cond:
                if self._closed:
                    return "closed"
            for _ in poller.poll(PING_S * 1000 / 2):
                lines = conn.read()
                if lines is None:
                    return self._why_gone(conn)
                for message in lines:
                    self._dispatch(conn, message)
                with self._cond:
                    if self._state == "displaced":
                        return self._reason
            now = time.monotonic()
            if now >= next_ping:
                next_ping = now + PING_S
                self._ping(conn)
            keeper = conn.peers.keeper
            if now >= next_idle_check and (keeper is None or keeper.ended()):
                next_idle_check = now + 1.0
                why = (
                    "the shepherd's keeper was gone: its worker, idle, was replaced by a "
                    "new shepherd"
                )
                if self._when_idle is not None and self._when_idle(
                    functools.partial(self._retire, conn, why)
                ):
                    return why
            hung = self._hung(conn, now)
            if hung:
                logger.error("%s: killing it", hung)
                self._own_reason = True
                worker = conn.peers.worker
                if worker is not None and not worker.kill_and_wait(SEND_TIMEOUT_S):
                    return f"{hung}; it did not die of SIGKILL"
                return f"{hung}; killed"

    def _retire(self, conn: Connection, why: str) -> None:
        """Stop an idle worker whose keeper died (a new shepherd replaces it);
        launches wait from now on."""
        self._mark_restarting(why)
        self._own_reason = True
        worker = conn.peers.worker
        if worker is not None:
            worker.kill_and_wait(SEND_TIMEOUT_S)

    def _why_gone(self, conn: Connection) -> str:
        worker = conn.peers.worker
        if worker is not None and worker.ended(0.2):
            return f"the shepherd worker {conn.pid} died"
        return f"the connection to the shepherd worker {conn.pid} was closed"

    def _hung(self, conn: Connection, now: float) -> str:
        """Why the worker counts as hung now, or "": silent for ``HANG_S`` and
        not working (stopped, or blocked without using the CPU), or silent for
        ``BUSY_HANG_S`` whatever it does."""
        worker = conn.peers.worker
        state = worker.state() if worker is not None else ""
        ticks = cpu_ticks(worker.pid) if worker is not None and state else None
        if ticks != self._ticks:  # sampled every turn: a stopped worker's do not move
            self._ticks, self._progress_at = ticks, now
        oldest = min(self._pings.values(), default=now)
        sending = conn.sending_since
        waited = max(now - oldest, now - sending if sending is not None else 0.0)
        if waited <= HANG_S:
            return ""
        working = state == "R" or now - self._progress_at < HANG_S
        if working and waited <= BUSY_HANG_S:
            return ""  # busy (a burst of jobs on a loaded machine), not hung
        what = " (stopped)" if state in ("T", "t") else ""
        return f"the shepherd worker {conn.pid}{what} did not answer for {waited:.1f} s"

    def _ping(self, conn: Connection) -> None:
        with contextlib.suppress(OSError):
            if not conn.send_lock.acquire(blocking=False):
                return  # a send is under way: its own duration is watched
            try:
                with self._cond:
                    self._ping_seq += 1
                    seq = self._ping_seq
                    self._pings[seq] = time.monotonic()
                conn.sock.sendall(json.dumps({"op": "ping", "seq": seq}).encode() + b"\n")
            finally:
                conn.send_lock.release()

    def _dispatch(self, conn: Connection, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op in ("pong", "alive"):
            seq = int(message["seq"])
            with self._cond:
                for k in [k for k in self._pings if k <= seq]:
                    del self._pings[k]
                if op == "pong":  # everything sent before ping ``seq`` was processed
                    self._unconfirmed = [(k, m) for k, m in self._unconfirmed if k > seq]
            return
        if op == "displaced":
            with self._cond:
                self._state = "displaced"
                self._reason = "displaced: another agent connected to the shepherd"
            logger.error("the shepherd of %s took another agent's connection", self.run_dir)
            return
        if op == "keeper":
            if conn.peers.keeper is not None:
                conn.peers.keeper.close()
                conn.peers.keeper = None
            logger.error("the shepherd's keeper died: %s", message.get("reason", ""))
            return
        try:
            self._on_message(message)
        except Exception:  # the reader must survive a bad callback
            logger.exception("handling the shepherd's %s message failed", op)

    # ------------------------------------------------------------------ connecting

    def _establish(self, *, first: bool, previous: Connection | None = None) -> Connection:
        """A connection to a live worker of the run directory: the one serving
        it, the one its keeper restarts, or one of a new shepherd started here.
        The first connection (the executor's start) fails with LaunchError when
        no shepherd starts within the connect timeout; later ones retry until
        the executor is closed."""
        started: subprocess.Popen[bytes] | None = None
        started_at = 0.0
        pause = 0.0
        begin = time.monotonic()
        if previous is not None:
            previous.close()
        for popen in self._launched:
            popen.poll()  # reap a shepherd of ours that ended (its keeper is our child)
        while True:
            with self._cond:
                if self._closed:
                    raise Closed
            sock = self._connect()
            if sock is not None:
                conn = self._handshake(sock)
                if conn is not None:
                    return conn
                continue
            # nobody listens: neither keeper nor worker lives
            if started is not None and started.poll() is None:
                if time.monotonic() - started_at < self._timeout:
                    time.sleep(0.01)
                    continue
                started.kill()  # started, never listening: try again
                started.wait()
            if started is not None:
                message = (
                    f"the shepherd of {self.run_dir} did not start; see {self.run_dir / LOG_FILE}"
                )
                if first and time.monotonic() - begin > self._timeout:
                    raise LaunchError(message)
                logger.error("%s", message)
                pause = min(max(pause * 2, 0.1), 5.0)
                time.sleep(pause)
            peers = read_identity(self.run_dir)
            if peers.worker is not None:  # one that no longer listens must not hold the lock
                peers.worker.kill_and_wait(SEND_TIMEOUT_S)
            peers.close()
            started = self._start_shepherd()
            self._launched.append(started)
            started_at = time.monotonic()

    def _connect(self) -> socket.socket | None:
        path = socket_path(self.run_dir)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(path) as address:
                sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            return None
        return sock

    def _handshake(self, sock: socket.socket) -> Connection | None:
        """Present the secret and wait for the hello, killing (verified) a worker
        that cannot answer (stopped, or silent past ``HELLO_PATIENCE_S``) and a
        keeper that has no worker answering after ``KEEPER_GRACE_S``. None when
        the connection closed first (try again)."""
        try:
            sock.sendall(json.dumps({"op": "hello", "secret": self._secret}).encode() + b"\n")
        except OSError:
            sock.close()
            return None
        buf = b""
        since = time.monotonic()
        orphaned_since: float | None = None  # the keeper lives, no worker does
        while True:
            with self._cond:
                if self._closed:
                    sock.close()
                    raise Closed
            ready, _, _ = select.select([sock], [], [], 0.02)
            if ready:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    sock.close()
                    self._refused_check(since)
                    return None
                buf += data
                if b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    hello = json.loads(line)
                    peers = Peers(_process(hello), _process(hello.get("keeper") or None))
                    keeper_info = hello.get("keeper") or {}
                    if peers.keeper is not None and not keeper_info.get("alive", True):
                        peers.keeper.close()
                        peers.keeper = None
                    sock.settimeout(SEND_TIMEOUT_S)
                    return Connection(sock, hello, peers, buf)
                continue
            now = time.monotonic()
            peers = read_identity(self.run_dir)
            try:
                worker, keeper = peers.worker, peers.keeper
                if worker is not None and not worker.ended():
                    orphaned_since = None
                    if worker.state() in ("T", "t") or now - since > HELLO_PATIENCE_S:
                        logger.error("the shepherd worker %s is silent: killing it", worker.pid)
                        worker.kill_and_wait(SEND_TIMEOUT_S)
                elif keeper is not None and not keeper.ended():
                    orphaned_since = orphaned_since or now
                    if now - orphaned_since > KEEPER_GRACE_S:
                        logger.error(
                            "the shepherd's keeper %s started no worker in %.0f s: killing it",
                            keeper.pid,
                            KEEPER_GRACE_S,
                        )
                        keeper.kill_and_wait(SEND_TIMEOUT_S)
            finally:
                peers.close()

    def _refused_check(self, since: float) -> None:
        """A connection closed before the hello: the worker refused the secret
        (a shepherd of another secret serves this directory), or the worker that
        had accepted it died. Only the same live worker closing three attempts
        in a row counts as a refusal, which retrying cannot mend."""
        peers = read_identity(self.run_dir)
        try:
            worker = peers.worker
            alive = worker is not None and not worker.ended(0.1)
            who = (worker.pid, worker.start) if worker is not None and alive else None
        finally:
            peers.close()
        if who is None or time.monotonic() - since > HELLO_PATIENCE_S:
            self._refusals = (None, 0)
            return
        self._refusals = (who, self._refusals[1] + 1 if self._refusals[0] == who else 1)
        if self._refusals[1] >= REFUSALS:
            self._refusals = (None, 0)
            raise LaunchError(
                f"the shepherd of {self.run_dir} refused this agent's secret "
                f"({self.run_dir / SECRET_FILE}); stop that shepherd to start afresh"
            )
