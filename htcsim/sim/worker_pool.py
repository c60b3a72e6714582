"""A process pool whose workers each hold one callable, with its data, sent once.

Replays in parallel (capacity planning, tuning) call the same function on a
large workload many times: the workload crosses to each worker once, through
the pool's initializer, and a task carries only its few arguments. Workers
are spawned, not forked: polars runs a thread pool, and forking a threaded
process can deadlock the child. With one worker the calls run in-process.

Workers die with the process that started them, however it ends: a parent
killed with SIGKILL runs no clean-up, and the workers, blocked on a queue
whose write end they hold themselves, would otherwise run on forever. Each
worker asks Linux for SIGKILL when its parent goes (``PR_SET_PDEATHSIG``).
The kernel sends it when the *thread* that started the worker ends, so a
pool is driven from one long-lived thread (the main one, in the commands).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_HELD: Callable[..., Any] | None = None


def _hold(fn: Callable[..., Any], parent: int) -> None:
    global _HELD
    _die_with(parent)
    _HELD = fn


_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """SIGKILL this worker when ``parent`` ends (Linux; elsewhere nothing is set).
    A parent already gone before the request took effect is caught by the
    check after it: the worker was adopted by another process."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _call(*args: Any) -> Any:
    assert _HELD is not None, "the pool initializer did not run"
    return _HELD(*args)


class WorkerPool:
    """``submit(*args)`` runs ``fn(*args)`` in a worker (or at once, in-process)."""

    def __init__(self, fn: Callable[..., Any], workers: int) -> None:
        self._fn = fn
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_hold,
                initargs=(fn, os.getpid()),
            )

    def submit(self, *args: Any) -> Future[Any]:
        if self._pool is not None:
            return self._pool.submit(_call, *args)
        done: Future[Any] = Future()
        done.set_result(self._fn(*args))
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
