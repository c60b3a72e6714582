"""Benchmarks find the real logs through HTCSIM_TRACE_DIR, as the tests do."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest


@pytest.fixture(scope="session")
def trace_dir() -> Path:
    env = os.environ.get("HTCSIM_TRACE_DIR")
    if not env or not Path(env).is_dir():
        pytest.fail("set HTCSIM_TRACE_DIR to the folder of the SWF logs (e.g. ../shared/traces)")
    return Path(env)


def log_path(trace_dir: Path, stem: str) -> Path:
    path = trace_dir / f"{stem}.swf.gz"
    if not path.exists():
        pytest.fail(f"{path} is missing; HTCSIM_TRACE_DIR must hold the PWA logs")
    return path


class _Stats(NamedTuple):
    min: float
    median: float
    max: float
    mean: float


class _Timing(NamedTuple):
    stats: _Stats


def _timed_once(fixture: Any) -> None:
    """Under ``--benchmark-disable`` pytest-benchmark runs the function once and
    keeps no figures; this times that one run and puts it where a benchmark
    reads its figures (``benchmark.stats.stats``), so that every benchmark runs
    to its end. CI runs the benchmarks this way: a broken one is caught
    without timing it."""
    plain = fixture.pedantic

    def pedantic(target: Any, *args: Any, **kwargs: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            begin = time.perf_counter()
            out = target(*a, **k)
            took = time.perf_counter() - begin
            fixture.stats = _Timing(_Stats(took, took, took, took))
            return out

        return plain(timed, *args, **kwargs)

    fixture.pedantic = pedantic


@pytest.fixture
def benchmark(benchmark: Any) -> Any:
    """The plugin's fixture; when benchmarks are disabled, its one run is timed."""
    if benchmark.disabled:
        _timed_once(benchmark)
    return benchmark


def sized(benchmark: Any, full: int, quick: int) -> int:
    """A benchmark's size: ``full`` when timed, ``quick`` when benchmarks are
    disabled (the run only proves that the benchmark still works)."""
    return quick if benchmark.disabled else full
