"""The per-node gauges of Dask nodes are each worker's own figures.

The engine used to sample every node from the agent's machine: each Dask
worker was exported with this machine's memory in use (and no CPU figure of
its own). Each worker now reports its process tree (the worker, its jobs):
a worker running a job that holds 300 MiB shows it, an idle one does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_harness import JOB_S, READY_S, running_agent, wait_for
from tests.dask_harness import DaskSite

WORKERS = {"busy-0": "cores=2,mem_mib=2000,gpus=0", "idle-0": "cores=1,mem_mib=1000,gpus=0"}
HELD_MIB = 300
JOB = (
    "import time; b = bytearray({mib} << 20); b[::4096] = b'x' * len(b[::4096]); "
    "open('holding', 'w').close(); time.sleep(600)"
)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DaskSite]:
    site = DaskSite(tmp_path, WORKERS)
    try:
        yield site
    finally:
        site.stop()


def _gauge(client: httpx.Client, name: str) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        sample.labels["node"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_each_dask_node_reports_its_own_memory_and_cpu(site: DaskSite, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with (
        running_agent(
            tmp_path,
            backend="dask",
            **site.agent_settings(),
            heartbeat_timeout_s=5.0,
            sample_interval_s=0.5,
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 2, timeout=READY_S)
        wait_for(lambda: set(_gauge(client, "htcsim_node_memory_used_bytes")) == set(WORKERS))
        memory = _gauge(client, "htcsim_node_memory_used_bytes")
        # an idle worker: its own process (tens of MiB), far below what this
        # machine has in use (what was exported before)
        assert memory["idle-0"] < HELD_MIB * 2**20, memory
        answer = client.post(
            "/jobs",
            json={
                "command": ["python3", "-c", JOB.format(mib=HELD_MIB)],
                "cwd": str(work),
                "cores": 2,
            },
        )
        assert answer.status_code == 201, answer.text
        wait_for(lambda: (work / "holding").exists(), timeout=JOB_S)

        def busy_holds() -> dict[str, float] | None:
            memory = _gauge(client, "htcsim_node_memory_used_bytes")
            return memory if memory.get("busy-0", 0) >= HELD_MIB * 2**20 else None

        memory = wait_for(busy_holds, timeout=READY_S)
        assert memory["idle-0"] < HELD_MIB * 2**20, memory
        cpu = _gauge(client, "htcsim_node_cpu_ratio")
        assert set(cpu) == set(WORKERS) and all(0.0 <= v <= 1.0 for v in cpu.values()), cpu
        [job] = answer.json()["ids"]
        assert client.post(f"/jobs/{job}/cancel").status_code == 200
