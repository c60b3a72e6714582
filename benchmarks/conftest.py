"""Benchmarks find the real logs through HTCSIM_TRACE_DIR, as the tests do."""

from __future__ import annotations

import os
from pathlib import Path

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
