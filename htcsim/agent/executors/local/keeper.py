"""The keeper: the shepherd's parent, which restarts it and keeps its jobs' exit statuses.

Why: the shepherd worker is the parent of every job, the one process the
kernel tells how each ended. Were it the top process, its death (kill -9, a
bug, the OOM killer) would hand its jobs to init and their statuses would be
lost. So ``python -m htcsim.agent.executors.local.shepherd`` starts as the
keeper, a child subreaper (``PR_SET_CHILD_SUBREAPER``) that forks the worker
and does little else. When the worker dies its children (the jobs) are
reparented to the keeper, the nearest subreaper above them, which

* starts a new worker at once: a fork of itself, so it has what the first
  had (the listening socket at the same path, the run directory's lock, the
  secret, the options), and the agent simply reconnects;
* reaps those jobs as they end, ``waitid`` with WNOWAIT first so as to read
  the zombie's start time in ``/proc``, then ``wait4`` for its status and
  resource use, and records (pid, start time, status, resource use) in
  ``reaped.jsonl``, fsync'd under a lock (``journal.ReapedLog``), then rings
  the worker through a pipe. The worker matches records to the jobs it
  adopted by pid *and* start time, so a reused pid never mixes two processes.

Only the processes that were the worker's children when it died are
recorded; the other orphans the keeper inherits (descendants of jobs whose
parent ended, which a subreaper receives) are reaped silently.

It ends when its worker ends cleanly (exit 0: the agent's ``shutdown``, or
SIGTERM) and, after a short grace, no process of its own is left: while a
job runs, a worker serves it. A first worker that fails before it ever
served ends the keeper too (the agent then reports ``shepherd.log``); a
worker that keeps dying is restarted after a growing pause (up to 5 s).

The keeper has no job logic; only the standard library (and this package's
stdlib-only helpers) is imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from htcsim.agent.executors.local import proc
from htcsim.agent.executors.local.journal import REAPED_FILE, ReapedLog
from htcsim.agent.executors.local.runfiles import (
    LIVE_FILE,
    LOCK_FILE,
    listen,
    secure_dir,
    socket_path,
)

QUICK_DEATH_S = 1.0
"""A worker that dies sooner than this after its start counts as failing."""
QUICK_RESTARTS = 3
"""Failing workers restarted at once before the pauses begin."""
MAX_PAUSE_S = 5.0
CLEAN_GRACE_S = 2.0
"""After a worker's clean end: how long the keeper waits for the processes it
inherited to end before it starts a worker for them instead of ending."""


@dataclass
class KeeperLink:
    """What a worker inherits from its keeper (it is a fork of it)."""

    keeper_pid: int
    keeper_start: int
    generation: int
    """0 for the keeper's first worker, then one more per restart."""
    restart_reason: str
    """Why the previous worker ended ("" for the first)."""
    restart_time: float
    replaced: str
    """For the first worker of a keeper that found a killed predecessor: what it found."""
    listener: socket.socket
    lock: IO[str]
    doorbell: int
    """Read end of the pipe the keeper rings after each record (non-blocking)."""
    ready: int
    """Write end of the pipe the worker writes one byte to once it serves."""
    reaped_path: Path


def describe(pid: int, status: int) -> str:
    """How a worker ended, in words."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = ""
        with contextlib.suppress(ValueError):
            name = f" ({signal.Signals(sig).name})"
        return f"the shepherd worker {pid} was killed by signal {sig}{name}"
    return f"the shepherd worker {pid} exited with code {os.waitstatus_to_exitcode(status)}"


def _say(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"htcsim keeper {os.getpid()}: {message}", file=sys.stderr, flush=True)


class Keeper:
    """The keeper's state and loop (see the module docstring)."""

    def __init__(self, run_dir: Path, worker: Callable[[KeeperLink], None]) -> None:
        self.run_dir = run_dir
        self.worker = worker
        self.me = os.getpid()
        self.start = proc.start_time(self.me) or 0
        secure_dir(run_dir)
        # one shepherd per run directory for its whole life (keeper and workers share it)
        self.lock = open(run_dir / LOCK_FILE, "a")  # noqa: SIM115
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.close()
            raise RuntimeError(f"another shepherd serves {run_dir}") from None
        proc.become_subreaper()
        proc.set_name("htcsim-keeper")
        live = run_dir / LIVE_FILE
        self.replaced = ""
        with contextlib.suppress(OSError):
            before = live.read_text().strip()
            self.replaced = f"the previous shepherd (keeper {before or '?'}) was killed"
        live.write_text(f"{self.me}\n")
        self.listener = listen(run_dir)
        self.reaped = ReapedLog(run_dir / REAPED_FILE)
        self.doorbell_r, self.doorbell_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.ready_r, self.ready_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.watched: dict[int, int] = {}  # pid -> start: the dead workers' children
        self.generation = -1
        self.worker_pid = 0
        self.worker_since = 0.0
        self.failures = 0

    # ------------------------------------------------------------------ the worker

    def _start_worker(self, reason: str) -> None:
        self.generation += 1
        link = KeeperLink(
            keeper_pid=self.me,
            keeper_start=self.start,
            generation=self.generation,
            restart_reason=reason,
            restart_time=time.time() if reason else 0.0,
            replaced=self.replaced if self.generation == 0 else "",
            listener=self.listener,
            lock=self.lock,
            doorbell=self.doorbell_r,
            ready=self.ready_w,
            reaped_path=self.reaped.path,
        )
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the worker ends with os._exit)
            self._be_worker(link)
        self.worker_pid = pid
        self.worker_since = time.monotonic()
        if reason:
            _say(f"{reason}; worker {pid} started (generation {self.generation})")

    def _be_worker(self, link: KeeperLink) -> NoReturn:
        code = 1
        try:
            for fd in (self.doorbell_w, self.ready_r, self.reaped.fd):
                os.close(fd)
            proc.set_name("htcsim-shepherd")
            self.worker(link)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _worker_ended(self, status: int) -> bool:
        """The worker ended (``status`` from its wait): start another, or say the
        keeper ends (True)."""
        served = self._drain(self.ready_r)
        reason = describe(self.worker_pid, status)
        # its children are now the keeper's: watch them (before reaping any)
        for pid, st in proc.proc_table().items():
            if st.ppid == self.me:
                self.watched[pid] = st.start
        if status == 0 and not self._children_left():
            return True
        if not served and self.generation == 0:
            _say(f"{reason} before it served: giving up")
            raise SystemExit(1)
        if status == 0:
            reason = f"{reason}, but processes of its jobs are left"
        if not served or time.monotonic() - self.worker_since < QUICK_DEATH_S:
            # a worker that fails to start, or keeps dying: the first few are
            # restarted at once, then after a pause that doubles
            self.failures += 1
            if self.failures > QUICK_RESTARTS or not served:
                pause = min(0.1 * 2 ** max(self.failures - QUICK_RESTARTS - 1, 0), MAX_PAUSE_S)
                _say(f"{reason} right after its start: next one in {pause:.1f} s")
                self._pause(pause)
        else:
            self.failures = 0
        self._start_worker(reason)
        return False

    def _pause(self, seconds: float) -> None:
        """Sleep, reaping what ends meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self._reap_any(block=False):
                time.sleep(min(left, 0.05))

    def _children_left(self) -> bool:
        """After a clean end: whether a process of the keeper's own still runs
        once the grace has passed (zombies are reaped meanwhile)."""
        deadline = time.monotonic() + CLEAN_GRACE_S
        while True:
            while self._reap_any(block=False):
                pass
            alive = [p for p, st in proc.proc_table().items() if st.ppid == self.me]
            if not alive or time.monotonic() > deadline:
                return bool(alive)
            time.sleep(0.02)

    @staticmethod
    def _drain(fd: int) -> bool:
        got = False
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(fd, 4096):
                got = True
        return got

    # ------------------------------------------------------------------ orphans

    def _reap_any(self, *, block: bool) -> bool:
        """Wait for one child that ended (any, or none if not ``block``); False
        if none had ended (or none is left)."""
        flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        try:
            info = os.waitid(os.P_ALL, 0, flags)
        except ChildProcessError:
            if block:
                raise
            return False
        if info is None or info.si_pid == 0:
            return False
        pid = info.si_pid
        if pid == self.worker_pid:
            if not block:
                return False  # handled by the loop
            _, status = os.waitpid(pid, 0)
            if self._worker_ended(status):
                raise StopIteration
            return True
        self._reap_orphan(pid)
        return True

    def _reap_orphan(self, pid: int) -> None:
        start = self.watched.pop(pid, None)
        if start is None:  # an orphan of a job's process: nothing to record
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        with self.reaped.locked():  # from before the wait until the record is durable
            seen = proc.start_time(pid)
            try:
                _, status, usage = os.wait4(pid, 0)
            except ChildProcessError:
                return
            if seen == start:
                self.reaped.append(
                    {
                        "pid": pid,
                        "start": start,
                        "status": status,
                        "cpu": usage.ru_utime + usage.ru_stime,
                        "maxrss_kib": usage.ru_maxrss,
                        "end": time.time(),
                    }
                )
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.doorbell_w, b"!")

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        self._start_worker("")
        try:
            while True:
                try:
                    self._reap_any(block=True)
                except StopIteration:
                    break
                except ChildProcessError:
                    break
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        finally:
            self._close()
        return 0

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            socket_path(self.run_dir).unlink()
        with contextlib.suppress(OSError):
            (self.run_dir / LIVE_FILE).unlink()
        self.listener.close()
        self.reaped.close()


def keep(run_dir: Path, worker: Callable[[KeeperLink], None]) -> int:
    """Run the keeper for ``run_dir``, starting ``worker`` (in a fork) as often
    as it dies; returns the keeper's exit code."""
    try:
        keeper = Keeper(run_dir, worker)
    except (OSError, RuntimeError) as exc:
        print(f"htcsim keeper: {exc}", file=sys.stderr, flush=True)
        return 1
    return keeper.run()
