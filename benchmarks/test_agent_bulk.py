"""Bulk cancel on a real agent process: 10,000 pending jobs in one request.

One ``POST /jobs/cancel`` names the 10,000 ids (as ``scancel`` given a list
does); the engine cancels them in one turn and one commit, and answers once
the cancellations are durable. A running job holds the only core, so the
10,000 stay pending. The filter form (``{"state": ["pending"]}``, as
``scancel -u user -t pending``) is timed once too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.agent_harness import running_agent, wait_for

N = 10_000
BATCH = 500


def _count(client: httpx.Client, state: str) -> int:
    return int(client.get("/cluster").json()["jobs"][state])


def _pending(client: httpx.Client, work: str) -> list[int]:
    body = {"jobs": [{"command": ["/bin/true"], "cwd": work}] * BATCH}
    ids: list[int] = []
    for _ in range(N // BATCH):
        answer = client.post("/jobs/batch", json=body)
        assert answer.status_code == 201, answer.text
        ids += answer.json()["ids"]
    return ids


def test_cancel_ten_thousand_pending_jobs(benchmark: Any, tmp_path: Path) -> None:
    work = str(tmp_path)
    with (
        running_agent(tmp_path, nodes=1, cores_per_node=1, sample_interval_s=60.0) as agent,
        agent.client() as client,
    ):
        client.timeout = httpx.Timeout(120)
        blocker = client.post("/jobs", json={"command": ["sleep", "600"], "cwd": work})
        blocker_id = blocker.json()["ids"][0]
        wait_for(lambda: client.get(f"/jobs/{blocker_id}").json()["state"] == "running")

        def setup() -> tuple[tuple[list[int]], dict[str, Any]]:
            return (_pending(client, work),), {}

        def cancel(ids: list[int]) -> None:
            answer = client.post("/jobs/cancel", json={"ids": ids})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["ids"]) == N

        benchmark.pedantic(cancel, setup=setup, rounds=3, iterations=1)
        assert _count(client, "pending") == 0

        _pending(client, work)
        start = time.perf_counter()
        answer = client.post("/jobs/cancel", json={"state": ["pending"]})
        by_filter = time.perf_counter() - start
        assert len(answer.json()["ids"]) == N
        client.post(f"/jobs/{blocker_id}/cancel")
    best = benchmark.stats.stats.min
    benchmark.extra_info["ids_s"] = round(best, 4)
    benchmark.extra_info["filter_s"] = round(by_filter, 4)
    print(
        f"\ncancel 10,000 pending jobs in one request: {best:.3f} s by id list, "
        f"{by_filter:.3f} s by filter (durable when answered)"
    )
