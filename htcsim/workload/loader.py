"""Resolve what a user names on the command line into a workload.

``None`` is the embedded default: a synthetic Lublin-Feitelson workload,
generated on the spot from a fixed seed, so the main command needs nothing
from outside. Anything else is a path or a trace name found by the catalog
(``./traces`` and ``$HTCSIM_TRACE_DIR``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from htcsim.model import Machine, Workload
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
    machine: Machine | None = None,
) -> Workload:
    """The default workload, or the SWF log at a path or with a catalog name.

    ``max_procs`` resizes the log's machine (jobs larger than it are dropped,
    as the SWF reader does); ``machine`` replaces it and drops no job for its
    size (see :func:`htcsim.workload.swf.read_swf`). Both apply to the
    embedded workload too.
    """
    if max_jobs is not None and max_jobs < 0:
        raise ValueError(f"max_jobs must be >= 0, got {max_jobs}")
    if trace is None:
        workload = default_workload()
        if max_jobs is not None:
            workload = replace(workload, jobs=workload.jobs[:max_jobs])
        if machine is not None:
            return replace(workload, machine=machine)
        if max_procs is not None:
            return _resized(workload, Machine.from_procs(max_procs))
        return workload
    path = find_trace(trace)
    return read_swf(
        path,
        max_procs=max_procs,
        max_jobs=max_jobs,
        skip_bad_lines=skip_bad_lines,
        machine=machine,
    )


def _resized(workload: Workload, machine: Machine) -> Workload:
    """``workload`` on ``machine``, its jobs larger than the machine dropped and counted."""
    jobs = workload.jobs
    too_large = jobs["n_tasks"] * jobs["cores_per_task"] > machine.total_cores
    dropped = Counter(workload.dropped)
    if too_large.any():
        dropped["larger_than_machine"] += int(np.count_nonzero(too_large))
    return replace(workload, jobs=jobs[~too_large], machine=machine, dropped=dropped)
