"""Capacity planning on a whole real log: ten fleet sizes of CTC-SP2, two worker processes.

Measured: the whole ``plan_fleet`` call, pool start-up (spawned workers import
htcsim and receive the workload once) and shutdown included, since that is
what a user waits for. One round: each call already replays the log ten times.
The in-process run (``workers=1``) is the yardstick: on a 2-vCPU machine two
concurrent replays each run slower than one alone, so the pool's gain there is
small, and the start-up (about a second) only pays off on longer logs or
more cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.conftest import log_path
from htcsim.plan.fleet import PlanResult, plan_fleet
from htcsim.policy import Policy
from htcsim.workload.swf import read_swf

SIZES = list(range(338, 788 + 1, 50))  # the log's 338 nodes up to 2.3x, 10 fleets
TARGET_P95_S = 2 * 3600.0


@pytest.mark.parametrize("workers", [2, 1])
def test_plan_ctc_ten_fleets(benchmark, trace_dir: Path, workers: int) -> None:
    workload = read_swf(log_path(trace_dir, "CTC-SP2-1996-3.1-cln"))
    walls: list[float] = []

    def plan() -> PlanResult:
        began = time.perf_counter()
        result = plan_fleet(workload, Policy(), TARGET_P95_S, sizes=SIZES, workers=workers)
        walls.append(time.perf_counter() - began)
        return result

    result = benchmark.pedantic(plan, rounds=1, iterations=1)
    points = result.plan_for(1.0).points
    assert points["size"].to_list() == SIZES
    benchmark.extra_info.update(
        {
            "wall_s": round(walls[0], 3),
            "jobs": len(workload),
            "sizes": SIZES,
            "workers": workers,
            "replays_per_second": round(len(SIZES) / walls[0], 2),
            "smallest_fleet": result.smallest(),
            "p95_wait_h": [round(v / 3600, 2) for v in points["p95_wait_s"].to_list()],
        }
    )
