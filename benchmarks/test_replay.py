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
