"""The agent on Dask: a real scheduler and four real worker processes on
127.0.0.1 with different resources, each worker a node."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.agent_harness import JOB_S, READY_S, running_agent, slack, wait_for
from tests.dask_harness import DaskSite


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DaskSite]:
    site = DaskSite(tmp_path)
    try:
        yield site
    finally:
        site.stop()


def _job(client: httpx.Client, work: Path, command: str, **extra: object) -> int:
    answer = client.post(
        "/jobs", json={"command": ["sh", "-c", command], "cwd": str(work), **extra}
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["ids"][0])


def _state(client: httpx.Client, job: int) -> dict[str, object]:
    return dict(client.get(f"/jobs/{job}").json())


def test_jobs_run_on_the_worker_the_kernel_chose(site: DaskSite, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with (
        running_agent(
            tmp_path, backend="dask", scheduler=site.address, heartbeat_timeout_s=5.0
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 4, timeout=READY_S)
        nodes = {n["name"]: n for n in client.get("/nodes").json()["nodes"]}
        assert nodes["big-0"]["capacity"] == {"cores": 4, "mem_mib": 4000, "gpus": 0}
        assert nodes["gpu-0"]["capacity"]["gpus"] == 1
        # the GPU job can only go to gpu-0, the 4-core job only to big-0; each job
        # prints its parent, the worker process that ran it
        gpu = _job(client, work, "echo $PPID", gpus=1)
        big = _job(client, work, "echo $PPID", cores=4)
        for job, name in ((gpu, "gpu-0"), (big, "big-0")):
            wait_for(lambda j=job: _state(client, j)["state"] == "completed", timeout=JOB_S)
            assert _state(client, job)["node"] == name
            parent = int(client.get(f"/jobs/{job}/log").text)
            assert parent == site.workers[name].pid
        too_big = client.post("/jobs", json={"command": ["true"], "cwd": str(work), "cores": 8})
        assert too_big.status_code == 422
        assert "more than any node" in too_big.json()["detail"]


def test_a_killed_worker_s_jobs_run_elsewhere(site: DaskSite, tmp_path: Path) -> None:
    """SIGKILL of a worker: its node is lost, its job is requeued by the policy
    and completes on another node; cancel reaches a remote process."""
    work = tmp_path / "work"
    work.mkdir()
    with (
        running_agent(
            tmp_path, backend="dask", scheduler=site.address, heartbeat_timeout_s=5.0
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 4, timeout=READY_S)
        job = _job(client, work, "sleep 2; echo done", cores=4)  # only big-0 fits it now
        wait_for(lambda: _state(client, job)["state"] == "running", timeout=JOB_S)
        assert _state(client, job)["node"] == "big-0"
        site.workers["big-0"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: _state(client, job)["state"] == "pending", timeout=JOB_S)
        # detected well within a few heartbeat timeouts (measured, scaled by the load)
        assert time.monotonic() - killed_at < 15 * slack()
        assert _state(client, job)["requeues"] == 1
        site.workers["big-0"] = site.start_worker("big-0")  # it comes back: a new node
        wait_for(lambda: _state(client, job)["state"] == "completed", timeout=JOB_S)
        history = [e["cause"] for e in client.get(f"/jobs/{job}/history").json()["events"]]
        assert any("lost" in cause for cause in history)

        pid_file = work / "sleeper.pid"
        sleeper = _job(client, work, f"sleep 300 & echo $! > {pid_file}; wait", cores=1)
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=JOB_S)
        pid = int(pid_file.read_text())
        assert psutil.pid_exists(pid)
        assert client.post(f"/jobs/{sleeper}/cancel").status_code == 200
        wait_for(lambda: _state(client, sleeper)["state"] == "cancelled", timeout=JOB_S)
        wait_for(lambda: not psutil.pid_exists(pid) or _zombie(pid), timeout=READY_S)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_a_hung_worker_is_lost_after_the_heartbeat_timeout(site: DaskSite, tmp_path: Path) -> None:
    """SIGSTOP: the worker stays connected but silent; past the heartbeat
    timeout its node is lost and its job requeued; when it wakes up it is a
    new node, the stale process is killed, and the job runs to completion."""
    work = tmp_path / "work"
    work.mkdir()
    runs = work / "runs"
    with (
        running_agent(
            tmp_path, backend="dask", scheduler=site.address, heartbeat_timeout_s=3.0
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 4, timeout=READY_S)
        job = _job(client, work, f"echo run >> {runs}; sleep 2", cores=4)  # big-0 only
        wait_for(lambda: _state(client, job)["state"] == "running", timeout=JOB_S)
        worker = site.workers["big-0"]
        worker.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            wait_for(lambda: _state(client, job)["state"] == "pending", timeout=JOB_S)
            # lost at the heartbeat timeout plus a margin (measured; the margin,
            # not the product's timeout, is scaled by the load)
            assert time.monotonic() - stopped_at < 3.0 + 5.0 * slack()
            names = {n["name"] for n in client.get("/nodes").json()["nodes"]}
            assert "big-0" not in names
        finally:
            worker.send_signal(signal.SIGCONT)
        wait_for(lambda: _state(client, job)["state"] == "completed", timeout=JOB_S)
        assert _state(client, job)["requeues"] == 1


def test_drain_waits_for_running_jobs_then_retires_the_worker(
    site: DaskSite, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    go = work / "go"
    with (
        running_agent(
            tmp_path, backend="dask", scheduler=site.address, heartbeat_timeout_s=5.0
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 4, timeout=READY_S)
        job = _job(client, work, f"while [ ! -e {go} ]; do sleep 0.05; done", cores=4)
        wait_for(lambda: _state(client, job)["state"] == "running", timeout=JOB_S)
        answer = client.post("/nodes/big-0/drain")
        assert answer.json()["state"] == "draining"
        time.sleep(1.0)
        assert site.workers["big-0"].poll() is None  # not retired while its job runs
        assert _state(client, job)["state"] == "running"
        go.touch()
        wait_for(lambda: _state(client, job)["state"] == "completed", timeout=JOB_S)
        site.workers["big-0"].wait(READY_S)  # the worker was retired: its process ended
        wait_for(
            lambda: "big-0" not in {n["name"] for n in client.get("/nodes").json()["nodes"]},
            timeout=READY_S,
        )
