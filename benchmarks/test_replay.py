"""In-process replay speed per log and backfill mode (parse excluded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.conftest import log_path
from htcsim.policy import Policy
from htcsim.sim import simulate
from htcsim.workload.swf import read_swf

LOGS = [
    "HPC2N-2002-2.2-cln",
    "SDSC-SP2-1998-4.2-cln",
    "CTC-SP2-1996-3.1-cln",
    "SDSC-BLUE-2000-4.2-cln",
]


@pytest.mark.parametrize("backfill", ["none", "easy", "conservative"])
@pytest.mark.parametrize("stem", LOGS)
def test_replay(benchmark, trace_dir: Path, stem: str, backfill: str) -> None:
    workload = read_swf(log_path(trace_dir, stem))
    result = benchmark.pedantic(
        lambda: simulate(workload, Policy(backfill=backfill)), rounds=2, iterations=1
    )
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)
    benchmark.extra_info.update(result.counters)


def test_parse_hpc2n(benchmark, trace_dir: Path) -> None:
    path = log_path(trace_dir, "HPC2N-2002-2.2-cln")
    workload = benchmark.pedantic(lambda: read_swf(path), rounds=5, iterations=1)
    assert len(workload) == 202_871


@pytest.mark.parametrize("backfill", ["easy", "conservative"])
def test_htc_million_jobs(benchmark, backfill: str) -> None:
    """One million single-core jobs on 100 x 32 cores (the HTC generator, load 0.9)."""
    from htcsim.workload.htc import generate_htc

    workload = generate_htc(1_000_000, 100, 32, seed=1)
    benchmark.pedantic(
        lambda: simulate(workload, Policy(backfill=backfill)), rounds=2, iterations=1
    )
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)


SLURM_PROFILE = {"slurm_reaction_s": 1, "slurm_backfill_interval_s": 30}
"""The Slurm profile's timing as ``htcsim import slurm-conf`` gives it (bf_interval 30)."""


@pytest.mark.parametrize("profile", ["off", "on"])
def test_replay_slurm_profile(benchmark, trace_dir: Path, profile: str) -> None:
    """HPC2N under EASY with the Slurm compatibility profile off and on: the
    reaction time and the backfill cycle add steps (a cycle at most once per
    interval after a change), whole-minute limits cost one pass over a column."""
    workload = read_swf(log_path(trace_dir, "HPC2N-2002-2.2-cln"))
    extra = SLURM_PROFILE if profile == "on" else {}
    policy = Policy(backfill="easy", slurm_whole_minute_limits=profile == "on", **extra)  # type: ignore[arg-type]
    result = benchmark.pedantic(lambda: simulate(workload, policy), rounds=3, iterations=1)
    benchmark.extra_info["jobs_per_second"] = round(len(workload) / benchmark.stats.stats.min)
    benchmark.extra_info.update(result.counters)
    assert (result.start_s >= 0).all()
