"""A pool worker's batch job ended: how long until its replacement joins.

The agent's pool is a real dask-jobqueue ``SLURMCluster`` on a single-host
Slurm (tests/slurm_harness.py); one worker, the policy's minimum. Each round
``scancel``s the worker's batch job and times, from the ``scancel``: the agent
seeing the worker leave, the pool giving the job up (``heartbeat_timeout_s``
after, 5 s here: a nanny could have brought the worker back), the new batch
job running, and its worker joining the slot. Skips where Slurm cannot run
(binaries missing, not root) or dask-jobqueue is not installed.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent_harness import READY_S, running_agent, wait_for
from tests.slurm_harness import Node, SlurmCluster, running_cluster, skip_reason
from tests.slurm_pool import CPUS, NODE, pool_policy, pool_tables, running, slurm_environ

JOB_NAME = "pool-bench"
HEARTBEAT_S = 5.0
ROUNDS = 3


def _reason() -> str | None:
    if importlib.util.find_spec("dask_jobqueue") is None:
        return "dask-jobqueue not installed (pip install dask-jobqueue)"
    return skip_reason()


_REASON = _reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    fragment = tmp_path_factory.mktemp("slurm-pool-bench") / "htcsim-slurm.conf"
    with running_cluster(fragment, "# no site settings\n", (Node(NODE, CPUS),)) as cluster:
        yield cluster


def _address(api: httpx.Client) -> str:
    """The pool's one worker's address ('' while its slot has none)."""
    nodes = api.get("/nodes").json()["nodes"]
    return next((str(n["address"]) for n in nodes if n["worker"]), "")


def _ended(api: httpx.Client) -> int:
    return int(api.get("/cluster").json()["pool"]["replaced"]["job_ended"])


def test_scancel_to_the_replacement_worker(benchmark, slurm: SlurmCluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tables = pool_tables(tmp_path / "slurm-logs", JOB_NAME, nodes=2, boot_timeout_s=3600)
    phases: list[dict[str, float]] = []
    with (
        running_agent(
            tmp_path,
            policy=pool_policy(1, 1),
            tables=tables,
            environ=slurm_environ(slurm),
            heartbeat_timeout_s=HEARTBEAT_S,
            dask_insecure=True,  # the pool is under test here, not TLS
        ) as agent,
        agent.client() as api,
    ):

        def setup() -> tuple[tuple[int, str, int], dict[str, object]]:
            address = wait_for(lambda: _address(api), timeout=READY_S * 2)
            jobs = wait_for(lambda: (r := running(slurm, JOB_NAME)) and len(r) == 1 and r)
            return (next(iter(jobs)), address, _ended(api)), {}

        def cancel_and_replace(batch: int, address: str, ended: int) -> None:
            t0 = time.perf_counter()
            slurm.run("scancel", str(batch))
            wait_for(lambda: _address(api) != address, timeout=READY_S, every=0.02)
            left = time.perf_counter() - t0
            wait_for(lambda: _ended(api) > ended, timeout=READY_S, every=0.02)
            given_up = time.perf_counter() - t0
            wait_for(lambda: running(slurm, JOB_NAME) - {batch}, timeout=READY_S * 2, every=0.05)
            started = time.perf_counter() - t0
            wait_for(lambda: _address(api) not in ("", address), timeout=READY_S * 2, every=0.02)
            joined = time.perf_counter() - t0
            phases.append(
                {"left": left, "given_up": given_up, "running": started, "joined": joined}
            )

        benchmark.pedantic(cancel_and_replace, setup=setup, rounds=ROUNDS, iterations=1)
    done = len(phases)  # ROUNDS when timed, 1 under --benchmark-disable
    info = {
        f"{key}_s_{how}": round(fn([p[key] for p in phases]), 2)
        for key in ("left", "given_up", "running", "joined")
        for how, fn in (("min", min), ("median", statistics.median))
    }
    benchmark.extra_info.update(info | {"rounds": done})
    print(
        f"\nscancel of the pool worker's batch job -> replacement joined, {done} round(s), "
        f"min / median: {info['joined_s_min']} / {info['joined_s_median']} s "
        f"(worker left {info['left_s_min']} / {info['left_s_median']} s; job given up "
        f"{info['given_up_s_min']} / {info['given_up_s_median']} s, heartbeat_timeout_s "
        f"= {HEARTBEAT_S:.0f}; new batch job running {info['running_s_min']} / "
        f"{info['running_s_median']} s)"
    )
