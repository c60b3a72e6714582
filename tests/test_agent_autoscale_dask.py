"""Autoscaling the agent's nodes through a Dask cluster manager (LocalCluster,
real worker processes): a burst grows the pool to the policy's bound, idleness
shrinks it to the minimum, no job is lost or killed by a scale-down, and the
decision log replays the autoscaler's decisions exactly."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from htcsim.agent.engine.replay_log import replay_decision_log
from htcsim.agent.store.jobs import AgentStore
from tests.agent_harness import JOB_S, READY_S, running_agent, wait_for
from tests.dask_harness import make_certs, tls_settings

POOL = """
[cluster]
manager = "distributed.LocalCluster"
node_type = "std"
nodes = 4
cores = 2
mem_mib = 1000

[cluster.options]
n_workers = 0
threads_per_worker = 4
processes = true
host = "127.0.0.1"
dashboard_address = "127.0.0.1:0"
resources = {cores = 2, mem_mib = 1000}
"""


def autoscale_policy(low: int, high: int, idle_s: int = 3) -> str:
    return f"""
[autoscale]
enabled = true
min_nodes = {low}
max_nodes = {high}
scale_up_wait_s = 0
boot_delay_s = 60
idle_s = {idle_s}
cooldown_s = 0
step = 4
"""


def _nodes(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/nodes").json()["nodes"])


def _provisioned(nodes: list[dict[str, Any]]) -> int:
    return sum(1 for n in nodes if n["state"] != "off")


def _with_worker(nodes: list[dict[str, Any]]) -> int:
    return sum(1 for n in nodes if n["worker"])


def _submit(client: httpx.Client, work: Path, command: str, **extra: object) -> int:
    answer = client.post(
        "/jobs", json={"command": ["sh", "-c", command], "cwd": str(work), **extra}
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["ids"][0])


def _job(client: httpx.Client, job: int) -> dict[str, Any]:
    return dict(client.get(f"/jobs/{job}").json())


def test_a_burst_grows_the_pool_to_its_bound_and_idleness_shrinks_it(tmp_path: Path) -> None:
    """With the agent's TLS settings: the cluster it starts speaks TLS only."""
    work = tmp_path / "work"
    work.mkdir()
    runs = work / "runs"
    make_certs(tmp_path / "certs")
    with (
        running_agent(
            tmp_path, policy=autoscale_policy(1, 3), tables=POOL, **tls_settings(tmp_path / "certs")
        ) as agent,
        agent.client() as client,
    ):
        # the minimum comes up at start; the rest of the pool is off
        wait_for(lambda: _with_worker(_nodes(client)) == 1, timeout=READY_S)
        assert client.get("/cluster").json()["pool"]["scheduler"].startswith("tls://127.0.0.1:")
        nodes = _nodes(client)
        assert len(nodes) == 4 and {n["type"] for n in nodes} == {"std"}
        assert sorted(n["state"] for n in nodes) == ["idle", "off", "off", "off"]

        # the long job runs until the test lets it end: past the pool's shrinking
        go = work / "go"
        long_job = _submit(
            client,
            work,
            f"echo $HTCSIM_JOB_ID >> {runs}; while [ ! -e {go} ]; do sleep 0.05; done",
        )
        burst = [_submit(client, work, f"echo $HTCSIM_JOB_ID >> {runs}; sleep 3") for _ in range(9)]
        jobs = [long_job, *burst]
        most_provisioned = most_workers = 0
        deadline = time.monotonic() + 2 * JOB_S
        while not all(_job(client, j)["state"] == "completed" for j in burst):
            assert time.monotonic() < deadline, "the burst did not complete"
            nodes = _nodes(client)
            most_provisioned = max(most_provisioned, _provisioned(nodes))
            most_workers = max(most_workers, _with_worker(nodes))
            assert _provisioned(nodes) <= 3  # the policy's max
            time.sleep(0.02)  # poll, leaving the (possibly loaded) cores to the agent
        assert most_workers == 3  # grew to the bound the policy allows

        # idle nodes leave, never the one running the long job; back to the minimum
        wait_for(lambda: _provisioned(_nodes(client)) == 1, timeout=READY_S)
        assert _job(client, long_job)["state"] == "running"
        pool = client.get("/cluster").json()["pool"]
        assert pool["target"] == 1
        wait_for(lambda: client.get("/cluster").json()["pool"]["workers"] == 1, timeout=READY_S)
        assert _job(client, long_job)["state"] == "running"
        go.touch()
        wait_for(lambda: _job(client, long_job)["state"] == "completed", timeout=JOB_S)

        for job in jobs:
            info = _job(client, job)
            assert info["state"] == "completed" and info["requeues"] == 0, info
        ran = runs.read_text().split()
        assert sorted(ran) == sorted(str(j) for j in jobs)  # each job ran exactly once
        store = AgentStore(agent.state_dir / "agent.db", readonly=True)
        decisions = store.decisions()
        store.close()
    autoscaled = [d for d in decisions if d[2] == "autoscale"]
    assert any(d[4]["booted"] for d in autoscaled) and any(d[4]["stopped"] for d in autoscaled)
    result = replay_decision_log(decisions)
    assert result.differences == []


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_a_lost_pool_worker_is_replaced_and_its_job_runs_again(tmp_path: Path) -> None:
    """SIGKILL of a pool worker's process: its job is requeued by the policy,
    a new worker takes the slot, and the job completes."""
    work = tmp_path / "work"
    work.mkdir()
    with (
        running_agent(
            tmp_path,
            policy=autoscale_policy(2, 2),
            tables=POOL,
            heartbeat_timeout_s=5.0,
            dask_insecure=True,
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: _with_worker(_nodes(client)) == 2, timeout=READY_S)
        # the job and the process it started die with its worker: never run twice
        first_run = (
            "[ -e child.pid ] || { sleep 300 & echo $! > child.pid; }; "
            "echo $$ >> job.pids; echo $PPID > worker.pid; sleep 3"
        )
        job = _submit(client, work, first_run, cores=2)
        wait_for(lambda: (work / "worker.pid").exists() and (work / "worker.pid").read_text())
        node = _job(client, job)["node"]
        first = int((work / "job.pids").read_text())
        child = int((work / "child.pid").read_text())
        os.kill(int((work / "worker.pid").read_text()), signal.SIGKILL)
        for pid in (first, child):
            wait_for(lambda p=pid: not psutil.pid_exists(p) or _zombie(p), timeout=READY_S)
        wait_for(lambda: _job(client, job)["requeues"] == 1, timeout=JOB_S)
        wait_for(lambda: _job(client, job)["state"] == "completed", timeout=JOB_S)
        history = [e["cause"] for e in client.get(f"/jobs/{job}/history").json()["events"]]
        assert any(f"node {node}" in cause and "lost" in cause for cause in history)
        wait_for(lambda: _with_worker(_nodes(client)) == 2, timeout=READY_S)
