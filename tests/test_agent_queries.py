"""The queue's reasons and start estimates on a real agent: right, and computed
off the scheduling loop.

One core, held by a job with a long walltime: every other job waits, and
each one's estimated start follows by hand from the walltimes (the reservation
profile of one core is a line). Then, with a few thousand jobs pending, the
agent's own counter shows that its scheduling loop takes the kernel lock
while a ``queue --start`` computation is in progress: the estimates do not
hold the kernel lock. No timing is asserted; the loops wait for a signal
under a generous bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.agent_harness import JOB_S, AgentProcess, running_agent, wait_for

BLOCKER_S = 3600
WALL_S = 60
PENDING = 3000


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(
        tmp_path_factory.mktemp("agent"), nodes=1, cores_per_node=1, sample_interval_s=60.0
    ) as running:
        yield running


@pytest.fixture(scope="module")
def queue(agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A job running on the only core for BLOCKER_S, then PENDING jobs of WALL_S each."""
    work = str(tmp_path_factory.mktemp("work"))
    with agent.client() as client:
        body = {"command": ["sleep", "600"], "cwd": work, "walltime_s": BLOCKER_S}
        blocker = client.post("/jobs", json=body).json()["ids"][0]
        wait_for(lambda: client.get(f"/jobs/{blocker}").json()["state"] == "running")
        ids: list[int] = []
        batch = {"jobs": [{"command": ["true"], "cwd": work, "walltime_s": WALL_S}] * 500}
        while len(ids) < PENDING:
            answer = client.post("/jobs/batch", json=batch)
            assert answer.status_code == 201, answer.text
            ids += answer.json()["ids"]
        start = client.get(f"/jobs/{blocker}").json()["start_time"]
    return {"work": work, "blocker": blocker, "ids": ids, "start": int(start)}


def pending_page(client: httpx.Client, estimate: bool = True) -> list[dict[str, Any]]:
    answer = client.get("/jobs", params={"state": "pending", "limit": 10_000, "estimate": estimate})
    assert answer.status_code == 200, answer.text
    jobs: list[dict[str, Any]] = answer.json()["jobs"]
    return jobs


def test_estimates_and_reasons_follow_the_queue(agent: AgentProcess, queue: dict[str, Any]) -> None:
    """Job k of the queue starts when the k jobs ahead of it, WALL_S each, have run
    after the blocker's requested end; the first waits for Resources, the
    others for Priority; one job shown alone says what the listing says."""
    with agent.client() as client:
        jobs = pending_page(client)
        assert [j["id"] for j in jobs] == queue["ids"]
        first = queue["start"] + BLOCKER_S
        assert [j["estimated_start"] for j in jobs] == [
            float(first + WALL_S * k) for k in range(PENDING)
        ]
        assert [j["reason"] for j in jobs] == ["Resources"] + ["Priority"] * (PENDING - 1)
        for k in (0, 1, PENDING // 2, PENDING - 1):
            alone = client.get(f"/jobs/{jobs[k]['id']}").json()
            assert alone["estimated_start"] == jobs[k]["estimated_start"]
            assert alone["reason"] == jobs[k]["reason"]
        assert all("estimated_start" not in j for j in pending_page(client, estimate=False))
        fields = ["reason,group", "estimated_start"]  # repeated or comma lists
        params = {"state": "pending", "limit": 5, "estimate": True, "fields": fields}
        few = client.get("/jobs", params=params)
        assert few.json()["jobs"] == [
            {k: j[k] for k in ("id", "reason", "group", "estimated_start")} for j in jobs[:5]
        ]


def test_a_held_job_shows_held_at_once(agent: AgentProcess, queue: dict[str, Any]) -> None:
    """The view the listing just used holds the job as pending: holding it makes the
    next answer come from a new one."""
    with agent.client() as client:
        job_id = queue["ids"][-1]
        pending_page(client)
        assert client.post(f"/jobs/{job_id}/hold").status_code == 200
        shown = client.get(f"/jobs/{job_id}").json()
        assert (shown["state"], shown["reason"]) == ("held", "Held")
        assert "estimated_start" not in shown
        assert client.post(f"/jobs/{job_id}/release").status_code == 200
        assert client.get(f"/jobs/{job_id}").json()["reason"] == "Priority"


def _turns_during_estimates(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("htcsim_queue_estimate_loop_turns_total "):
            return float(line.split()[1])
    raise AssertionError("htcsim_queue_estimate_loop_turns_total is not exported")


def test_the_loop_takes_the_kernel_while_estimates_are_computed(
    agent: AgentProcess, queue: dict[str, Any]
) -> None:
    """Submits keep coming (each one a turn of the loop, which takes the kernel
    lock) while ``queue --start`` pages are asked for again and again (each one
    naming new jobs, so each computes the estimates anew): some turn takes the
    kernel lock while a computation is in progress, which it could not if the
    computation held the lock (nor if it held the GIL throughout)."""
    stop = threading.Event()
    submitted: list[int] = []

    def submit_forever() -> None:
        with agent.client() as client:
            body = {"command": ["true"], "cwd": queue["work"], "walltime_s": WALL_S}
            while not stop.is_set():
                answer = client.post("/jobs", json=body)
                assert answer.status_code == 201, answer.text
                submitted.append(answer.json()["ids"][0])

    submitter = threading.Thread(target=submit_forever)
    submitter.start()
    try:
        with agent.client() as client:
            before = _turns_during_estimates(client)

            def overlapped() -> bool:
                assert submitter.is_alive()
                jobs = pending_page(client)
                assert all(j["estimated_start"] is not None for j in jobs)
                return _turns_during_estimates(client) > before

            wait_for(overlapped, timeout=JOB_S, every=0.0)
    finally:
        stop.set()
        submitter.join()
    with agent.client() as client:
        answer = client.post("/jobs/cancel", json={"ids": submitted})
        assert answer.status_code == 200, answer.text
