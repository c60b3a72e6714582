"""Load the workload a replaying command names, and refuse one it cannot replay.

Shared by ``simulate``, ``tune`` and ``plan`` so that they read a log the same
way: a cluster file (``--cluster``) is the machine the log is read for, a job
no node of the replay could hold is an error naming it (or left out, counted,
with ``--skip-oversized``), and a workload with no job is an error (or a
warning with ``--allow-empty``) rather than a table of dashes. Private to
``htcsim.cli``; it imports the library inside its functions, as commands do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from htcsim.cli._console import fail, warn

if TYPE_CHECKING:
    from pathlib import Path

    from htcsim.cluster import Cluster
    from htcsim.model import Workload
    from htcsim.policy import Policy

LOADING_FLAGS: Mapping[str, str] = {"max_procs": "--max-procs", "max_jobs": "--max-jobs"}
"""The loader's parameters and the options that set them, for its error messages."""


def load(
    trace: str | Path | None,
    *,
    cluster: Cluster | None = None,
    max_procs: int | None = None,
    max_jobs: int | None = None,
    skip_bad_lines: bool = False,
) -> Workload:
    """The workload, read for the cluster's machine when there is one; errors in one line."""
    from htcsim.model import Machine
    from htcsim.workload.loader import load_workload
    from htcsim.workload.swf import SWFError

    if cluster is not None and max_procs is not None:
        raise fail("give either --cluster or --max-procs, not both")
    if max_procs is not None and max_procs < 1:
        raise fail(f"--max-procs must be at least 1, got {max_procs}")
    machine = None if cluster is None else Machine.from_procs(cluster.total_cores, cluster.n_nodes)
    try:
        return load_workload(
            trace,
            max_procs=max_procs,
            max_jobs=max_jobs,
            skip_bad_lines=skip_bad_lines,
            machine=machine,
        )
    except (SWFError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc), LOADING_FLAGS) from exc


def fit_nodes(
    workload: Workload, policy: Policy, cluster: Cluster | None, *, skip_oversized: bool
) -> Workload:
    """The workload if every job fits the replay's nodes; else an error naming the first
    job that does not, or (``skip_oversized``) the workload without those jobs."""
    from htcsim.sim.fit import oversized_jobs, without_oversized

    if cluster is None and not policy.autoscale:
        # the log's own machine: loading already dropped what it cannot hold (the
        # check costs about 0.4 us a job, 90 ms on HPC2N's 200,000)
        return workload
    oversized = oversized_jobs(workload, policy, cluster)
    if not oversized.count:
        return workload
    if skip_oversized:
        return without_oversized(workload, oversized)
    where = "the cluster" if cluster is not None else "the machine"
    raise fail(
        f"{workload.name}: {oversized.describe_first()}; {oversized.count:,} job(s) "
        f"fit no node of {where}: --skip-oversized leaves them out (counted)"
    )


def require_jobs(workload: Workload, shown: str | None, *, allow_empty: bool | None) -> None:
    """An error when the workload has no job; a warning instead when ``allow_empty``.

    ``allow_empty`` None: the command has no ``--allow-empty`` (nothing to do
    without a job), so the message does not offer it.
    """
    if len(workload):
        return
    name = shown or workload.name
    dropped = sum(workload.dropped.values())
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(workload.dropped.items()))
    why = f" (loading dropped all {dropped:,}: {reasons})" if dropped else ""
    if allow_empty:
        warn(f"{name}: no job to replay{why}; going on as --allow-empty asks")
        return
    offer = "; --allow-empty replays it anyway" if allow_empty is False else ""
    raise fail(f"{name}: no job to replay{why}{offer}")
