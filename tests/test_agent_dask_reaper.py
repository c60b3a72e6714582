"""A Dask worker reaps its jobs with one thread, whatever their number, and
reports each exit with its own status, CPU and log.

The worker used to start a thread per job to wait for it; one thread now
polls the jobs' pidfds and records the exits it finds together. Run here in
the test's process, as the worker runs it (only the standard library), with
its real guard process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from htcsim.agent.executors.dask import worker
from tests.agent_harness import JOB_S, READY_S, wait_for

JOBS = 40


@pytest.fixture
def guard_stopped() -> Iterator[None]:
    """The guard this test's launch starts is stopped after it (its pipe closed)."""
    yield
    with worker._lock:
        guard, worker._guard = worker._guard, None
    if guard is not None and guard.stdin is not None:
        guard.stdin.close()
        guard.wait(READY_S)


def _exits(after: int) -> list[dict[str, Any]]:
    return asyncio.run(worker.wait_exits(after, 0.5))


def test_many_jobs_are_reaped_by_one_thread_each_with_its_own_status(
    tmp_path: Path, guard_stopped: None
) -> None:
    go = tmp_path / "go"
    logs = tmp_path / "logs" / "new"  # made by the first job that logs there
    jobs = [
        {
            "job": 9_000_000 + k,
            "run": f"reaper-{k}",
            "argv": [
                "sh",
                "-c",
                f'while [ ! -e "{go}" ]; do sleep 0.01; done; echo {k}; exit {k % 5}',
            ],
            "cwd": str(tmp_path),
            "env": {"PATH": "/usr/bin:/bin"},
            "stdout": str(logs / f"{k}.out"),
            "stderr": str(logs / f"{k}.out"),
        }
        for k in range(JOBS)
    ]
    threads = threading.active_count()
    pids = worker.launch_jobs(jobs, time.monotonic(), 60.0, "reaper-test")
    assert all(pids), pids
    running = {j["job"] for j in jobs}
    assert running <= set(worker.job_table()["running"])
    # every job waits for ``go``: none has a thread of its own (the reaper is one)
    assert threading.active_count() <= threads + 1
    go.touch()
    found: dict[int, dict[str, Any]] = {}

    def collected() -> bool:
        after = max((int(r["seq"]) for r in found.values()), default=0)
        for record in _exits(after):
            if int(record["job"]) in running:
                found[int(record["job"])] = record
        return len(found) == JOBS

    wait_for(collected, timeout=JOB_S)
    for job in jobs:
        k = int(job["job"]) - 9_000_000
        record = found[int(job["job"])]
        assert (record["code"], record["signal"], record["run"]) == (k % 5, 0, f"reaper-{k}")
        assert record["cpu"] >= 0.0 and record["rss"] > 0.0
        assert Path(str(job["stdout"])).read_text() == f"{k}\n"
    assert not running & set(worker.job_table()["running"])
    worker.release_jobs(sorted(running))
    assert not running & {int(r["job"]) for r in worker.job_table()["exits"]}
