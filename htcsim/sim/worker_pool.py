"""A process pool whose workers each hold one callable, with its data, sent once.

Replays in parallel (capacity planning, tuning) call the same function on a
large workload many times: the workload crosses to each worker once, through
the pool's initializer, and a task carries only its few arguments. Workers
are spawned, not forked: polars runs a thread pool, and forking a threaded
process can deadlock the child. With one worker the calls run in-process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_HELD: Callable[..., Any] | None = None


def _hold(fn: Callable[..., Any]) -> None:
    global _HELD
    _HELD = fn


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
                initargs=(fn,),
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
