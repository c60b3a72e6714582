"""Autoscaling through a Dask cluster manager (LocalCluster, real worker
processes): how long a burst takes to grow the pool from its minimum to its
maximum, and an idle pool to shrink back, through the agent."""

from __future__ import annotations

import time
from pathlib import Path

from tests.agent_harness import running_agent, wait_for
from tests.test_agent_autoscale_dask import (
    POOL,
    _nodes,
    _provisioned,
    _with_worker,
    autoscale_policy,
)


def test_burst_grows_and_idleness_shrinks_the_pool(benchmark, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    timings: dict[str, float] = {}
    with (
        running_agent(
            tmp_path, policy=autoscale_policy(1, 4, idle_s=2), tables=POOL, dask_insecure=True
        ) as agent,
        agent.client() as api,
    ):
        wait_for(lambda: _with_worker(_nodes(api)) == 1, timeout=60)
        body = {"jobs": [{"command": ["sleep", "4"], "cwd": str(work)}] * 8}  # 8 cores: 4 nodes

        def burst() -> None:
            t0 = time.perf_counter()
            assert api.post("/jobs/batch", json=body).status_code == 201
            wait_for(lambda: _with_worker(_nodes(api)) == 4, timeout=120, every=0.02)
            timings["up"] = time.perf_counter() - t0
            wait_for(lambda: api.get("/cluster").json()["jobs"]["completed"] == 8, timeout=120)
            t1 = time.perf_counter()
            wait_for(lambda: _provisioned(_nodes(api)) == 1, timeout=120, every=0.02)
            wait_for(lambda: api.get("/cluster").json()["pool"]["workers"] == 1, timeout=60)
            timings["down"] = time.perf_counter() - t1

        benchmark.pedantic(burst, rounds=1, iterations=1)
    benchmark.extra_info["scale_up_seconds"] = round(timings["up"], 2)
    benchmark.extra_info["scale_down_seconds"] = round(timings["down"], 2)
    print(
        f"\nLocalCluster pool 1 -> 4 workers after a burst: {timings['up']:.2f} s; "
        f"back to 1 after the last job (idle_s = 2): {timings['down']:.2f} s"
    )
