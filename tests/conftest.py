"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trace_dir() -> Path:
    """The folder of the real SWF logs, from HTCSIM_TRACE_DIR.

    Fails rather than skips when it is missing: the real-trace tests are the ones that
    check the loader against published numbers, and a silent skip would hide that
    they never ran.
    """
    env = os.environ.get("HTCSIM_TRACE_DIR")
    if not env or not Path(env).is_dir():
        pytest.fail("set HTCSIM_TRACE_DIR to the folder of the SWF logs (e.g. ../shared/traces)")
    return Path(env)
