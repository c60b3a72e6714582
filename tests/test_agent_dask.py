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
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_harness import JOB_S, READY_S, running_agent, slack, wait_for
from tests.dask_harness import DaskSite, GroupSampler, hang_worker, job_groups, wake


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
            tmp_path, backend="dask", **site.agent_settings(), heartbeat_timeout_s=5.0
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
            tmp_path, backend="dask", **site.agent_settings(), heartbeat_timeout_s=5.0
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
    timeout its node is lost and, once its lease has ended, its job requeued;
    when it wakes up it is a new node, and the job runs to completion."""
    work = tmp_path / "work"
    work.mkdir()
    runs = work / "runs"
    with (
        running_agent(
            tmp_path,
            backend="dask",
            **site.agent_settings(),
            heartbeat_timeout_s=3.0,
            lease_s=2.0,
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
            # lost at the heartbeat timeout, requeued once its lease has ended
            # (the lease, the round trip and the fencing margin of 1 s), plus a
            # margin (measured; the margin, not the product's times, is scaled
            # by the load)
            assert time.monotonic() - stopped_at < 3.0 + 2.0 + 1.0 + 5.0 * slack()
            states = {n["name"]: n["state"] for n in client.get("/nodes").json()["nodes"]}
            assert states["big-0"] == "down"  # out of the kernel, listed for the alert
        finally:
            worker.send_signal(signal.SIGCONT)
        wait_for(lambda: _state(client, job)["state"] == "completed", timeout=JOB_S)
        assert _state(client, job)["requeues"] == 1
        # back under its name: the node is replaced, no longer down
        assert _node_states(client)["big-0"] != "down"


def test_drain_waits_for_running_jobs_then_retires_the_worker(
    site: DaskSite, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    go = work / "go"
    with (
        running_agent(
            tmp_path, backend="dask", **site.agent_settings(), heartbeat_timeout_s=5.0
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


def _node_states(client: httpx.Client) -> dict[str, str]:
    return {n["name"]: n["state"] for n in client.get("/nodes").json()["nodes"]}


def _metric(client: httpx.Client, name: str) -> list[tuple[dict[str, str], float]]:
    text = client.get("/metrics").text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


POD_WORKERS = {  # named as the Kubernetes manifests name them: cpu-$(POD_NAME)
    "cpu-dask-workers-cpu-7d9f8b6c5-x2k4p": "cores=2,mem_mib=1000,gpus=0",
    "cpu-dask-workers-cpu-7d9f8b6c5-q8m3z": "cores=2,mem_mib=1000,gpus=0",
}


def test_a_lost_worker_is_down_until_replaced_and_its_samples_go(tmp_path: Path) -> None:
    """Workers named after their pods are of type ``cpu``. SIGKILL of one: its
    node is listed ``down`` and counted in htcsim_nodes{state="down"} (what the
    HtcsimNodesDown alert reads), while its usage gauges stop being exported;
    a worker of the same name replaces it."""
    site = DaskSite(tmp_path, POD_WORKERS)
    lost, kept = sorted(POD_WORKERS)
    try:
        with (
            running_agent(
                tmp_path,
                backend="dask",
                **site.agent_settings(),
                heartbeat_timeout_s=5.0,
                sample_interval_s=0.2,
            ) as agent,
            agent.client() as client,
        ):
            wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 2, timeout=READY_S)
            assert {n["type"] for n in client.get("/nodes").json()["nodes"]} == {"cpu"}

            def sampled() -> set[str]:
                return {labels["node"] for labels, _ in _metric(client, "htcsim_node_cpu_ratio")}

            wait_for(lambda: sampled() == {lost, kept}, timeout=READY_S)

            site.workers[lost].send_signal(signal.SIGKILL)
            site.workers[lost].wait(READY_S)
            wait_for(lambda: _node_states(client).get(lost) == "down", timeout=JOB_S)
            assert _node_states(client)[kept] == "idle"
            down = dict((labels["state"], v) for labels, v in _metric(client, "htcsim_nodes"))
            assert down["down"] == 1.0 and down["idle"] == 1.0
            wait_for(lambda: sampled() == {kept}, timeout=READY_S)
            mem = {labels["node"] for labels, _ in _metric(client, "htcsim_node_memory_used_bytes")}
            assert mem == {kept}

            site.workers[lost] = site.start_worker(lost)
            wait_for(lambda: _node_states(client).get(lost) == "idle", timeout=READY_S)
            down = dict((labels["state"], v) for labels, v in _metric(client, "htcsim_nodes"))
            assert down["down"] == 0.0
    finally:
        site.stop()


def test_a_hung_worker_s_jobs_never_run_in_two_places(tmp_path: Path) -> None:
    """SIGSTOP of a worker and its nanny (a hung node daemon, a cut network):
    its jobs keep running there, unseen. Its guard kills them when the
    agent's lease ends, and only after that are they requeued and run on the
    idle worker: no job ever has two live process groups, and each completes
    exactly once."""
    workers = {name: "cores=2,mem_mib=1000,gpus=0" for name in ("w-0", "w-1", "w-2")}
    site = DaskSite(tmp_path, workers, nanny=True)
    work = tmp_path / "work"
    work.mkdir()
    done = work / "done"
    stopped: list[psutil.Process] = []
    sampler = GroupSampler(work)
    try:
        with (
            running_agent(
                tmp_path,
                backend="dask",
                **site.agent_settings(),
                heartbeat_timeout_s=3.0,
                lease_s=2.0,
            ) as agent,
            agent.client() as client,
        ):
            wait_for(lambda: len(_node_states(client)) == 3, timeout=READY_S)
            # two jobs of a whole node each: one worker stays idle. They run
            # well past the lease, so they are fenced, not finished, on the
            # hung worker
            jobs = [
                _job(client, work, f"sleep 8; echo $HTCSIM_JOB_ID >> {done}", cores=2)
                for _ in range(2)
            ]
            for job in jobs:
                wait_for(lambda j=job: _state(client, j)["state"] == "running", timeout=JOB_S)
            wait_for(lambda: len(job_groups(work)) == 2, timeout=JOB_S)
            job = jobs[0]
            node = str(_state(client, job)["node"])
            stopped = hang_worker(site, node, work)
            wait_for(lambda: _state(client, job)["requeues"] == 1, timeout=JOB_S)
            wait_for(lambda: _state(client, job)["state"] == "running", timeout=JOB_S)
            assert _state(client, job)["node"] != node  # on the idle worker
            # the hung worker wakes up: it reports its fenced runs late (lost);
            # the agent, whose runs tell them apart, ignores them
            wake(stopped)
            wait_for(lambda: _node_states(client).get(node) == "idle", timeout=READY_S)
            for j in jobs:
                wait_for(lambda j=j: _state(client, j)["state"] == "completed", timeout=JOB_S)
            history = [e["cause"] for e in client.get(f"/jobs/{job}/history").json()["events"]]
            assert any("lost" in cause for cause in history), history
            assert [_state(client, j)["requeues"] for j in jobs] == [1, 0]
    finally:
        sampler.stop()
        wake(stopped)
        site.stop()
    twice = {job: groups for job, groups in sampler.most.items() if len(groups) > 1}
    assert not twice, f"jobs with two live process groups at once: {twice}"
    assert set(sampler.most) == set(jobs)  # the sampler saw them
    ran = done.read_text().split()
    assert sorted(ran) == sorted(str(j) for j in jobs), ran
