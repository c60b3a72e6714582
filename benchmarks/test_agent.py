"""The live agent's speed, on a real agent process over a real socket.

- submit throughput through the REST API: batched submits, each job durable
  (committed, fsync'd) before the answer; jobs are held so that no process
  competes with the agent for the CPUs;
- 10,000 ``/bin/true`` jobs on the local executor, from the first submit to
  the last completion;
- the scheduling pass at 10,000 pending jobs (the kernel call the loop makes,
  in the agent's configuration);
- ``GET /jobs/{id}`` latency (p50, p99) while 10,000 jobs are queued.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.conftest import sized
from htcsim.agent.config import AgentConfig
from htcsim.agent.server import Agent
from tests.agent_harness import running_agent, wait_for

BATCH = 500


def _count(client: httpx.Client, state: str) -> int:
    return int(client.get("/cluster").json()["jobs"][state])


def test_submit_throughput_rest(benchmark, tmp_path: Path) -> None:
    """10,000 held jobs in batches of 500 over 4 concurrent connections."""
    import concurrent.futures as cf

    work = str(tmp_path)
    with running_agent(tmp_path, nodes=1, cores_per_node=2) as agent:
        body = {"jobs": [{"command": ["/bin/true"], "cwd": work, "hold": True}] * BATCH}

        def submit_all() -> None:
            def one(_: int) -> int:
                with agent.client() as client:
                    answer = client.post("/jobs/batch", json=body)
                    assert answer.status_code == 201, answer.text
                    return len(answer.json()["ids"])

            with cf.ThreadPoolExecutor(4) as pool:
                assert sum(pool.map(one, range(10_000 // BATCH))) == 10_000

        rounds = 0

        def counted() -> None:
            nonlocal rounds
            rounds += 1
            submit_all()

        benchmark.pedantic(counted, rounds=3, iterations=1)
        with agent.client() as client:
            assert _count(client, "held") == rounds * 10_000
    rate = 10_000 / benchmark.stats.stats.min
    benchmark.extra_info["jobs_per_second"] = round(rate)
    print(f"\nsubmit through the REST API: {rate:,.0f} jobs/s accepted and durable")


def test_ten_thousand_true_jobs(benchmark, tmp_path: Path) -> None:
    """10,000 /bin/true (1 core each) on one node declaring 16 cores (slots
    pinned round-robin on this machine's CPUs), submitted in batches."""
    work = str(tmp_path)
    n = sized(benchmark, 10_000, 1_000)
    with running_agent(tmp_path, nodes=1, cores_per_node=16, sample_interval_s=60.0) as agent:
        body = {"jobs": [{"command": ["/bin/true"], "cwd": work}] * BATCH}
        rounds = 0

        def run_all() -> None:
            nonlocal rounds
            rounds += 1
            with agent.client() as client:
                for _ in range(n // BATCH):
                    assert client.post("/jobs/batch", json=body).status_code == 201
                wait_for(lambda: _count(client, "completed") >= rounds * n, timeout=600, every=0.05)

        benchmark.pedantic(run_all, rounds=2, iterations=1)
        with agent.client() as client:
            assert _count(client, "failed") == 0
            passes = client.get("/cluster").json()["passes"]
    rate = n / benchmark.stats.stats.min
    benchmark.extra_info["jobs_per_second"] = round(rate)
    benchmark.extra_info["passes"] = passes
    print(f"\n10,000 /bin/true on the local executor: {rate:,.0f} jobs completed per second")


def _queued_agent(tmp_path: Path) -> tuple[Agent, str]:
    """An in-process agent on one node of one core."""
    config = AgentConfig(
        state_dir=tmp_path / "state",
        allow_root=True,
        run_jobs_as="agent",
        nodes=1,
        cores_per_node=1,
    )
    agent = Agent(config)
    agent.start()
    return agent, agent.admin_token or ""


def test_scheduling_pass_at_10k_pending(benchmark, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    agent, token = _queued_agent(tmp_path)
    try:
        client = TestClient(agent.app)
        headers = {"Authorization": f"Bearer {token}"}
        work = str(tmp_path)
        client.post("/jobs", json={"command": ["sleep", "600"], "cwd": work}, headers=headers)
        body = {"jobs": [{"command": ["/bin/true"], "cwd": work}] * BATCH}
        for _ in range(10_000 // BATCH):
            client.post("/jobs/batch", json=body, headers=headers)
        engine = agent.engine
        wait_for(lambda: engine.kernel.n_pending == 10_000)

        def one_pass() -> None:
            with engine.kernel_lock:
                engine.kernel.schedule(int(time.time()))

        benchmark.pedantic(one_pass, rounds=200, iterations=1)
        pass_p50 = benchmark.stats.stats.median

        # also a full pass: what the loop pays after a change at the queue's head
        def full_pass() -> float:
            with engine.kernel_lock:
                engine.kernel.configure(engine.policy)  # forces a full pass
                t0 = time.perf_counter()
                engine.kernel.schedule(int(time.time()))
                return time.perf_counter() - t0

        full = min(full_pass() for _ in range(20))
    finally:
        agent.stop()
        from tests.agent_harness import kill_jobs_of

        kill_jobs_of(tmp_path / "state")
    benchmark.extra_info["incremental_pass_ms"] = round(pass_p50 * 1e3, 4)
    benchmark.extra_info["full_pass_us"] = round(full * 1e6, 1)
    print(
        f"\npass at 10,000 pending: {pass_p50 * 1e6:,.1f} us (incremental), "
        f"{full * 1e6:,.1f} us (full: the head does not fit, EASY stops at once)"
    )


def test_get_job_latency_with_10k_queued(benchmark, tmp_path: Path) -> None:
    """p50/p99 of GET /jobs/{id} (with reason, priority and start estimate) on a
    real socket while 10,000 jobs wait behind a blocker."""
    work = str(tmp_path)
    with running_agent(tmp_path, nodes=1, cores_per_node=1) as agent, agent.client() as client:
        client.post("/jobs", json={"command": ["sleep", "600"], "cwd": work})
        body = {"jobs": [{"command": ["/bin/true"], "cwd": work}] * BATCH}
        ids: list[int] = []
        for _ in range(10_000 // BATCH):
            ids += client.post("/jobs/batch", json=body).json()["ids"]
        wait_for(lambda: _count(client, "pending") == 10_000)
        rng = np.random.default_rng(1)
        picks = rng.choice(ids, 2000)
        latencies: list[float] = []

        def query_all() -> None:
            for job in picks:
                t0 = time.perf_counter()
                answer = client.get(f"/jobs/{int(job)}")
                latencies.append(time.perf_counter() - t0)
                assert answer.status_code == 200

        benchmark.pedantic(query_all, rounds=1, iterations=1)
    p50, p99 = np.percentile(latencies, [50, 99])
    benchmark.extra_info["p50_ms"] = round(float(p50) * 1e3, 3)
    benchmark.extra_info["p99_ms"] = round(float(p99) * 1e3, 3)
    print(f"\nGET /jobs/{{id}} with 10,000 queued: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
