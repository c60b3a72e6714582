"""``htcsim queue --start`` on a real agent with 10,000 pending jobs, and what it
costs the others: submit and cancel latency while it runs again and again.

A running job holds the only core, so the 10,000 jobs stay pending. The whole
command is timed (a fresh ``python -m htcsim`` process: start-up, every page
of ``GET /jobs?estimate=true``, the table), then submits and cancels are timed
one by one while a thread runs the same command back to back. The queue's
reasons and estimates are computed off the scheduling loop (the kernel lock
is held only to copy the queue), so a submit waits for no estimate.

The figures go to ``extra_info``: whole-command seconds (min and median of
the rounds), submit and cancel p50/p99 in milliseconds (and the same probes
with no query running), how many ``queue --start`` commands ran meanwhile,
and the agent's own histograms of the time the kernel was held to copy the
queue and of the estimates' time. The machine is shared: the figures are
noisy; compare mins.

``test_whole_queue_in_the_kernel`` times the kernel alone on the pass
benchmark's machine (1,000 nodes of 32 cores, full): the copy, the one walk
that estimates every queued job, and one per-job estimate of the last job in
line, which walks the whole queue (Q of those were the old cost).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.conftest import sized
from benchmarks.test_pass import loaded_kernel
from tests.agent_harness import AgentProcess, running_agent, wait_for

N = 10_000
BATCH = 500
PROBES = 200


def _pending(client: httpx.Client, work: str, n: int) -> None:
    body = {"jobs": [{"command": ["/bin/true"], "cwd": work}] * BATCH}
    for _ in range(n // BATCH):
        answer = client.post("/jobs/batch", json=body)
        assert answer.status_code == 201, answer.text


def _queue_start(agent: AgentProcess) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "htcsim", "queue", "--all", "--start"],
        env=agent.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _probe(client: httpx.Client, work: str) -> tuple[list[float], list[float]]:
    """Seconds of PROBES submits, one at a time, then of cancelling each of them."""
    submits, cancels, ids = [], [], []
    for _ in range(PROBES):
        t0 = time.perf_counter()
        answer = client.post("/jobs", json={"command": ["/bin/true"], "cwd": work})
        submits.append(time.perf_counter() - t0)
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["ids"][0])
    for job_id in ids:
        t0 = time.perf_counter()
        answer = client.post(f"/jobs/{job_id}/cancel")
        cancels.append(time.perf_counter() - t0)
        assert answer.status_code == 200, answer.text
    return submits, cancels


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _histogram(metrics: str, name: str) -> tuple[float, float]:
    """(count, sum) of a histogram in a Prometheus text exposition."""
    count = re.search(rf"^{name}_count (\S+)$", metrics, re.M)
    total = re.search(rf"^{name}_sum (\S+)$", metrics, re.M)
    assert count and total, name
    return float(count[1]), float(total[1])


def test_queue_start_with_ten_thousand_pending(benchmark: Any, tmp_path: Path) -> None:
    work = str(tmp_path)
    with (
        running_agent(tmp_path, nodes=1, cores_per_node=1, sample_interval_s=60.0) as agent,
        agent.client() as client,
    ):
        client.timeout = httpx.Timeout(120)
        blocker = client.post("/jobs", json={"command": ["sleep", "600"], "cwd": work})
        blocker_id = blocker.json()["ids"][0]
        wait_for(lambda: client.get(f"/jobs/{blocker_id}").json()["state"] == "running")
        _pending(client, work, N)

        out = benchmark.pedantic(_queue_start, args=(agent,), rounds=5, iterations=1)
        lines = out.splitlines()
        assert lines[0].split()[4:7] == ["REASON", "PRIORITY", "START"]
        assert len(lines) == N + 2  # header, the blocker, the pending jobs
        assert sum(" Resources " in line for line in lines) == 1

        alone = _probe(client, work)  # the same probes with no query running
        stop = threading.Event()
        commands = [0]

        def queue_loop() -> None:
            while not stop.is_set():
                _queue_start(agent)
                commands[0] += 1

        looper = threading.Thread(target=queue_loop)
        looper.start()
        try:
            wait_for(lambda: commands[0] >= 1 or not looper.is_alive())
            submits, cancels = _probe(client, work)
        finally:
            stop.set()
            looper.join()
        metrics = client.get("/metrics").text
        client.post(f"/jobs/{blocker_id}/cancel")

    snap_n, snap_s = _histogram(metrics, "htcsim_queue_snapshot_seconds")
    est_n, est_s = _histogram(metrics, "htcsim_queue_estimate_seconds")
    stats = benchmark.stats.stats
    info = {
        "queue_start_min_s": round(stats.min, 3),
        "queue_start_median_s": round(stats.median, 3),
        "alone_submit_p50_ms": round(1000 * statistics.median(alone[0]), 2),
        "alone_submit_p99_ms": round(1000 * _percentile(alone[0], 0.99), 2),
        "alone_cancel_p99_ms": round(1000 * _percentile(alone[1], 0.99), 2),
        "submit_p50_ms": round(1000 * statistics.median(submits), 2),
        "submit_p99_ms": round(1000 * _percentile(submits, 0.99), 2),
        "cancel_p50_ms": round(1000 * statistics.median(cancels), 2),
        "cancel_p99_ms": round(1000 * _percentile(cancels, 0.99), 2),
        "queue_commands_meanwhile": commands[0],
        "kernel_held_per_copy_ms": round(1000 * snap_s / max(snap_n, 1), 2),
        "estimates_per_computation_ms": round(1000 * est_s / max(est_n, 1), 2),
    }
    benchmark.extra_info.update(info)
    print(f"\nqueue --start over {N} pending jobs: {info}")


@pytest.mark.parametrize("n_queued", [10_000, 100_000])
def test_whole_queue_in_the_kernel(benchmark: Any, n_queued: int) -> None:
    n_queued = sized(benchmark, n_queued, min(n_queued, 20_000))
    kernel = loaded_kernel("easy", n_queued)
    kernel.schedule(3_600)
    last = int(kernel.pending_jobs()[-1])
    t0 = time.perf_counter()
    alone = kernel.estimate_start(last, 3_600)
    one_job = time.perf_counter() - t0

    def copy_and_walk() -> Any:
        t0 = time.perf_counter()
        snapshot = kernel.snapshot_queue(3_600)
        t1 = time.perf_counter()
        starts = snapshot.estimate_starts()
        copies.append(t1 - t0)
        walks.append(time.perf_counter() - t1)
        return starts

    copies: list[float] = []
    walks: list[float] = []
    rounds = 5 if n_queued <= 10_000 else 1
    starts = benchmark.pedantic(copy_and_walk, rounds=rounds, iterations=1)
    assert len(starts) == n_queued and int(starts[-1]) == alone
    copy_s = min(copies)
    benchmark.extra_info.update(
        {
            "copy_ms": round(copy_s * 1e3, 2),
            "walk_ms": round(min(walks) * 1e3, 2),
            "one_per_job_estimate_ms": round(one_job * 1e3, 2),
        }
    )
    print(
        f"\n{n_queued} queued: copy {copy_s * 1e3:.1f} ms, every estimate "
        f"{min(walks) * 1e3:.1f} ms; one job's alone {one_job * 1e3:.1f} ms"
    )
