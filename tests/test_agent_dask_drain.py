"""SIGTERM to a Dask worker drains its node (stop_grace.py, worker.stop_jobs).

Its running jobs get SIGTERM and the grace (the agent's kill_grace_s), then
SIGKILL. A job that ends on its own meanwhile (status 128 or less) is
recorded as it ended, once, never requeued; one stopped by the drain (a
signal, or a status above 128 such as a checkpoint's ``exit 143``) is
requeued by the policy once the worker is gone. The same with a nanny (what
deleting a pod does) and without one (``dask worker --no-nanny``). And a
nanny whose worker process was killed at the same moment (``scancel``
signals every process of the batch job) stops at once instead of waiting
for the connect timeout to reach a dead worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.agent_harness import JOB_S, READY_S, running_agent, wait_for
from tests.dask_harness import DaskSite

# the jobs fit cpu-0 only; small-0 stays (with no worker left at all the agent
# keeps its last inventory), and a requeued job waits there, pending
WORKERS = {"cpu-0": "cores=8,mem_mib=1000,gpus=0", "small-0": "cores=1,mem_mib=1000,gpus=0"}
GRACE_S = 6.0


def _job(client: httpx.Client, work: Path, command: str) -> int:
    answer = client.post(
        "/jobs",
        json={
            "command": ["sh", "-c", f"echo $HTCSIM_JOB_ID >> starts; {command}"],
            "cwd": str(work),
            "cores": 2,
        },
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["ids"][0])


@contextmanager
def _agent(site: DaskSite, tmp_path: Path) -> Iterator[httpx.Client]:
    """An agent on ``site`` with the drain's grace ``GRACE_S``: its API client,
    once both nodes are there."""
    with (
        running_agent(
            tmp_path,
            backend="dask",
            **site.agent_settings(),
            heartbeat_timeout_s=5.0,
            kill_grace_s=GRACE_S,
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 2, timeout=READY_S)
        yield client


def _state(client: httpx.Client, job: int) -> dict[str, object]:
    return dict(client.get(f"/jobs/{job}").json())


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
def test_a_drained_worker_s_jobs_end_as_they_ended_or_are_requeued(
    tmp_path: Path, nanny: bool
) -> None:
    site = DaskSite(tmp_path, WORKERS, nanny=nanny)
    work = tmp_path / "work"
    work.mkdir()
    # each job notes SIGTERM in a file; the first two then finish their work
    # within the grace, the third checkpoints and exits 143, the fourth ignores it
    wait_term = "while [ ! -e term.$HTCSIM_JOB_ID ]; do sleep 0.05; done"
    note_term = "trap 'touch term.$HTCSIM_JOB_ID' TERM"
    try:
        with _agent(site, tmp_path) as client:
            finisher = _job(client, work, f"{note_term}; {wait_term}; sleep 0.3; exit 0")
            failer = _job(client, work, f"{note_term}; {wait_term}; sleep 0.3; exit 3")
            checkpointer = _job(
                client,
                work,
                "trap 'touch term.$HTCSIM_JOB_ID; exit 143' TERM; while true; do sleep 0.05; done",
            )
            deaf = _job(
                client, work, "trap '' TERM; echo $$ > deaf.pid; while true; do sleep 0.05; done"
            )
            jobs = (finisher, failer, checkpointer, deaf)
            for job in jobs:
                wait_for(lambda j=job: _state(client, j)["state"] == "running", timeout=JOB_S)
            deaf_pid = work / "deaf.pid"
            wait_for(lambda: deaf_pid.exists() and deaf_pid.read_text().strip(), timeout=JOB_S)
            pid = int(deaf_pid.read_text())
            assert {_state(client, j)["node"] for j in jobs} == {"cpu-0"}

            site.workers["cpu-0"].send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            for job in (finisher, failer, checkpointer):  # each got the checkpoint signal
                wait_for(lambda j=job: (work / f"term.{j}").exists(), timeout=JOB_S)

            def ended(job: int) -> dict[str, object] | None:
                state = _state(client, job)
                return state if state["state"] not in ("running", "pending") else None

            done = wait_for(lambda: ended(finisher), timeout=JOB_S)
            assert done["state"] == "completed" and done["exit_code"] == 0, done
            failed = wait_for(lambda: ended(failer), timeout=JOB_S)
            assert failed["state"] == "failed" and failed["exit_code"] == 3, failed
            for job in (checkpointer, deaf):  # stopped by the drain: requeued
                wait_for(lambda j=job: _state(client, j)["requeues"] == 1, timeout=JOB_S)
                assert _state(client, job)["state"] == "pending"
            # the deaf job was dead before its requeue, and not before the grace
            assert _dead(pid)
            assert time.monotonic() - stopped_at >= GRACE_S
            site.workers["cpu-0"].wait(READY_S)
            for job in (finisher, failer):  # recorded once, as it ended
                info = _state(client, job)
                assert info["requeues"] == 0, info
                assert info["state"] in ("completed", "failed"), info
                causes = [e["cause"] for e in client.get(f"/jobs/{job}/history").json()["events"]]
                assert not any("lost" in cause for cause in causes), causes
            starts = (work / "starts").read_text().split()
            assert sorted(starts) == sorted(str(j) for j in jobs), starts
    finally:
        site.stop()


def test_a_nanny_whose_worker_was_killed_with_it_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scancel``: SIGTERM to the nanny and its worker process at once. The
    worker dies at once (its guard kills its jobs); the nanny's drain finds
    it gone and the nanny stops, instead of trying to reach the dead worker
    until the connect timeout (set to READY_S here, so that a nanny that
    waits for it is told from one that does not)."""
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", f"{READY_S:.0f}s")
    site = DaskSite(tmp_path, WORKERS, nanny=True)
    work = tmp_path / "work"
    work.mkdir()
    try:
        with _agent(site, tmp_path) as client:
            job = _job(client, work, "trap '' TERM; while true; do sleep 0.05; done")
            wait_for(lambda: _state(client, job)["state"] == "running", timeout=JOB_S)
            nanny = psutil.Process(site.workers["cpu-0"].pid)
            [worker] = [p for p in nanny.children() if "spawn_main" in " ".join(p.cmdline())]
            for process in (worker, nanny):
                os.kill(process.pid, signal.SIGTERM)
            stopped_at = time.monotonic()
            site.workers["cpu-0"].wait(READY_S)
            assert time.monotonic() - stopped_at < READY_S / 2
            wait_for(lambda: _state(client, job)["requeues"] == 1, timeout=JOB_S)
    finally:
        site.stop()
