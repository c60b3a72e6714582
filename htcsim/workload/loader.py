"""Resolve what a user names on the command line into a workload.

``None`` is the embedded default: a synthetic Lublin-Feitelson workload,
generated on the spot from a fixed seed, so the main command needs nothing
from outside. Anything else is a path or a trace name found by the catalog
(``./traces`` and ``$HTCSIM_TRACE_DIR``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from htcsim.model import Workload
from htcsim.workload.catalog import find_trace
from htcsim.workload.lublin import generate_lublin
from htcsim.workload.swf import read_swf

DEFAULT_WORKLOAD = {"n_jobs": 20_000, "n_procs": 256, "seed": 1, "load": 0.85}
"""The embedded default: 20,000 Lublin-Feitelson batch jobs on 256 processors
at an offered load of 0.85 (busy enough for the backfill modes to differ)."""


def default_workload() -> Workload:
    """The workload ``htcsim simulate`` replays when no trace is named."""
    params = DEFAULT_WORKLOAD
    return generate_lublin(
        int(params["n_jobs"]), int(params["n_procs"]), seed=int(params["seed"]), load=params["load"]
    )


def load_workload(
    trace: str | Path | None,
    *,
    max_procs: int | None = None,
    max_jobs: int | None = None,
    skip_bad_lines: bool = False,
) -> Workload:
    """The default workload, or the SWF log at a path or with a catalog name."""
    if trace is None:
        workload = default_workload()
        if max_jobs is not None:
            workload = replace(workload, jobs=workload.jobs[:max_jobs])
        return workload
    path = find_trace(trace)
    return read_swf(path, max_procs=max_procs, max_jobs=max_jobs, skip_bad_lines=skip_bad_lines)
