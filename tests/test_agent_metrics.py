"""The agent's Prometheus metrics: base units, totals that survive a restart,
and per-node series that leave with their node.

Why: a counter that falls to 0 when the agent restarts makes the dashboard's
totals lie (and ``increase`` guess); a node gone from the inventory must not
stay exported with the last values it had.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from htcsim.agent.metrics import MIB, RSS_BUCKETS, AgentMetrics, StoredTotals
from htcsim.agent.store.jobs import AgentStore
from tests.agent_harness import running_agent
from tests.test_agent_api import client_of, close_agent, make_agent


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _totals(client: httpx.Client) -> dict[str, float]:
    samples = _samples(client.get("/metrics").text)
    out = {
        "submitted": sum(v for _, v in samples["htcsim_jobs_submitted_total"]),
        "started": sum(v for _, v in samples["htcsim_jobs_started_total"]),
        "cpu": sum(v for _, v in samples.get("htcsim_job_cpu_seconds_total", [])),
    }
    for labels, v in samples["htcsim_jobs_finished_total"]:
        out[f"finished:{labels['state']}"] = v
    return out


def _wait_ended(client: httpx.Client, ids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [client.get(f"/jobs/{i}").json()["state"] for i in ids]
        if all(s in ("completed", "failed", "cancelled") for s in states):
            return
        time.sleep(0.1)
    raise AssertionError(f"jobs did not end: {states}")


# ------------------------------------------------------------------ units


def test_node_usage_is_exported_in_base_units() -> None:
    m = AgentMetrics()
    m.set_node_usage("n0", 0.5, 3 * MIB)
    samples = _samples(m.render().decode())
    assert samples["htcsim_node_cpu_ratio"] == [({"node": "n0"}, 0.5)]
    assert samples["htcsim_node_memory_used_bytes"] == [({"node": "n0"}, 3.0 * MIB)]
    assert RSS_BUCKETS[0] == 16 * MIB and RSS_BUCKETS[-1] == 65536 * MIB


# ------------------------------------------------------------------ nodes that leave


def test_a_node_that_left_is_no_longer_exported() -> None:
    m = AgentMetrics()
    m.set_node_usage("n0", 0.1, 1.0)
    m.set_node_usage("n1", 0.2, 2.0)
    m.keep_nodes(["n1"])
    samples = _samples(m.render().decode())
    assert samples["htcsim_node_cpu_ratio"] == [({"node": "n1"}, 0.2)]
    assert samples["htcsim_node_memory_used_bytes"] == [({"node": "n1"}, 2.0)]
    m.keep_nodes([])  # every node gone: no series, and no error on a second removal
    m.keep_nodes([])
    samples = _samples(m.render().decode())
    assert "htcsim_node_cpu_ratio" not in samples
    m.set_node_usage("n0", 0.3, 3.0)  # a node that comes back is exported again
    assert _samples(m.render().decode())["htcsim_node_cpu_ratio"] == [({"node": "n0"}, 0.3)]


# ------------------------------------------------------------------ totals across restarts


def test_restored_totals_are_added_once() -> None:
    m = AgentMetrics()
    totals = StoredTotals(5, 4, {"completed": 3, "failed": 1}, {"ann": 2.5})
    m.restore_totals(totals)
    m.restore_totals(totals)
    m.submitted.inc()
    samples = _samples(m.render().decode())
    assert samples["htcsim_jobs_submitted_total"] == [({}, 6.0)]
    assert samples["htcsim_jobs_started_total"] == [({}, 4.0)]
    finished = {labels["state"]: v for labels, v in samples["htcsim_jobs_finished_total"]}
    assert finished["completed"] == 3 and finished["failed"] == 1 and finished["timeout"] == 0
    assert samples["htcsim_job_cpu_seconds_total"] == [({"user": "ann"}, 2.5)]


def test_an_empty_store_has_no_totals(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    try:
        assert store.totals() == (0, 0, {}, {})
    finally:
        store.close()


def test_counters_keep_their_totals_across_a_restart(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with running_agent(tmp_path, nodes=1, cores_per_node=2) as agent:
        with agent.client() as client:
            jobs = [
                {"command": ["true"], "cwd": str(work)},
                {"command": ["true"], "cwd": str(work)},
                {"command": ["false"], "cwd": str(work)},
                {"command": ["true"], "cwd": str(work), "hold": True},
            ]
            answer = client.post("/jobs/batch", json={"jobs": jobs})
            assert answer.status_code == 201, answer.text
            ids = answer.json()["ids"]
            assert client.post(f"/jobs/{ids[3]}/cancel").status_code == 200
            _wait_ended(client, ids)
            before = _totals(client)
        assert before["submitted"] == 4
        assert before["started"] == 3
        assert before["finished:completed"] == 2
        assert before["finished:failed"] == 1
        assert before["finished:cancelled"] == 1
        agent.restart()
        with agent.client() as client:
            after = _totals(client)
            assert after == before
            answer = client.post("/jobs", json={"command": ["true"], "cwd": str(work)})
            assert answer.status_code == 201, answer.text
            _wait_ended(client, [int(answer.json()["ids"][0])])
            again = _totals(client)
        assert again["submitted"] == 5
        assert again["started"] == 4
        assert again["finished:completed"] == 3


def test_a_node_the_engine_loses_leaves_the_metrics(tmp_path: Path) -> None:
    """Through the engine: after the inventory shrinks, /metrics no longer
    carries the gone node's samples."""
    agent = make_agent(tmp_path / "state")
    try:
        client = client_of(agent)
        nodes = {labels["node"] for labels, _ in _node_cpu(client)}
        assert nodes == {"node0", "node1"}
        engine = agent.engine
        engine.set_nodes([n for n in engine.node_specs if n.name == "node0"]).result(10)
        assert {labels["node"] for labels, _ in _node_cpu(client)} == {"node0"}
        mem = _samples(client.get("/metrics").text)["htcsim_node_memory_used_bytes"]
        assert {labels["node"] for labels, _ in mem} == {"node0"}
    finally:
        close_agent(agent)


def _node_cpu(client: TestClient) -> list[tuple[dict[str, str], float]]:
    deadline = time.monotonic() + 10
    while True:
        samples = _samples(client.get("/metrics").text)
        if "htcsim_node_cpu_ratio" in samples or time.monotonic() > deadline:
            return samples.get("htcsim_node_cpu_ratio", [])
        time.sleep(0.05)
