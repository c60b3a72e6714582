"""The agent's pool kept at its minimum on a real Slurm: dask-jobqueue's
``SLURMCluster`` submits each worker as a batch job that slurmd starts on
this machine (tests/slurm_harness.py).

A batch job that ends under its worker (``scancel`` here; its walltime at a
site) is replaced, and the jobs it ran go on to complete exactly once; a
batch job that cannot start (its node drained) is cancelled after the pool's
``boot_timeout_s`` and submitted again. The tests skip only where Slurm
cannot run (binaries missing, not root) or dask-jobqueue is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent_harness import JOB_S, READY_S, running_agent, slack, wait_for
from tests.slurm_harness import Node, SlurmCluster, running_cluster, skip_reason
from tests.slurm_pool import (
    CPUS,
    NODE,
    batch_job_of,
    batch_jobs,
    pool_policy,
    pool_tables,
    running,
    slurm_environ,
)


def _reason() -> str | None:
    if importlib.util.find_spec("dask_jobqueue") is None:
        return "dask-jobqueue not installed (pip install dask-jobqueue)"
    return skip_reason()


_REASON = _reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

BOOT_S = READY_S * 2
"""A batch job submitted, started by slurmd, its worker's Python up and joined
(several imports on a loaded machine)."""


HEARTBEAT_S = 20.0
"""Past the manager's own lost-worker timer (15 s: SpecCluster closes a job
whose worker left, keeping its spec), so the test covers that the pool then
asks for the job anew; the benchmark's 5 s covers the pool cancelling it."""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    fragment = tmp_path_factory.mktemp("slurm-pool") / "htcsim-slurm.conf"
    with running_cluster(
        fragment, "# no site settings: the pool's tests use Slurm's defaults\n", (Node(NODE, CPUS),)
    ) as cluster:
        yield cluster


def _nodes(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/nodes").json()["nodes"])


def _workers(client: httpx.Client) -> set[str]:
    """The addresses of the pool's workers (a replacement may reuse a name)."""
    return {str(n["address"]) for n in _nodes(client) if n["worker"]}


def _job(client: httpx.Client, job: int) -> dict[str, Any]:
    return dict(client.get(f"/jobs/{job}").json())


def _submit(client: httpx.Client, work: Path, command: str) -> int:
    answer = client.post("/jobs", json={"command": ["sh", "-c", command], "cwd": str(work)})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["ids"][0])


def _replaced(client: httpx.Client, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'htcsim_pool_boots_replaced_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no htcsim_pool_boots_replaced_total sample")


def test_a_cancelled_batch_job_is_replaced_and_its_jobs_complete_once(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    tables = pool_tables(tmp_path / "slurm-logs", "pool-ended", nodes=3, boot_timeout_s=BOOT_S * 2)
    with (
        running_agent(
            tmp_path,
            policy=pool_policy(2, 2),
            tables=tables,
            environ=slurm_environ(slurm),
            heartbeat_timeout_s=HEARTBEAT_S,
            dask_insecure=True,  # the pool is under test here, not TLS
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(_workers(client)) == 2, timeout=BOOT_S)
        first_workers = _workers(client)
        first_jobs = running(slurm, "pool-ended")
        assert len(first_jobs) == 2

        # each job records the worker it ran under, then, last, that it completed;
        # "&&": scancel's SIGTERM reaches the cancelled worker's job too, and a
        # shell whose sleep it killed would go on to its last line
        command = "echo $PPID > worker.$HTCSIM_JOB_ID; sleep 4 && echo $HTCSIM_JOB_ID >> done"
        jobs = [_submit(client, work, command) for _ in range(6)]
        victim = wait_for(lambda: next(work.glob("worker.*"), None), timeout=JOB_S)
        worker_pid = int(wait_for(lambda: victim.read_text().strip(), timeout=JOB_S))
        batch = batch_job_of(worker_pid)
        assert batch in first_jobs
        slurm.run("scancel", str(batch))

        # the batch job is gone for good; another one takes its place and joins
        wait_for(lambda: batch not in batch_jobs(slurm, "pool-ended"), timeout=READY_S)
        wait_for(lambda: len(running(slurm, "pool-ended") - first_jobs) == 1, timeout=BOOT_S)
        wait_for(
            lambda: len(_workers(client)) == 2 and _workers(client) != first_workers,
            timeout=BOOT_S,
        )
        assert len(running(slurm, "pool-ended")) == 2  # the minimum, no more
        assert _replaced(client, "job_ended") >= 1
        assert "did not bring it back" in agent.log.read_text()

        for job in jobs:
            wait_for(lambda j=job: _job(client, j)["state"] == "completed", timeout=JOB_S * 2)
        done = (work / "done").read_text().split()
        assert sorted(int(j) for j in done) == sorted(jobs)  # each completed exactly once
        assert sum(_job(client, j)["requeues"] for j in jobs) >= 1  # the cancelled one's ran again


def test_a_batch_job_that_cannot_start_is_cancelled_and_submitted_again(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    boot_timeout_s = 20.0
    work = tmp_path / "work"
    work.mkdir()
    tables = pool_tables(
        tmp_path / "slurm-logs", "pool-held", nodes=2, boot_timeout_s=boot_timeout_s
    )
    slurm.run("scontrol", "update", f"nodename={NODE}", "state=drain", "reason=pool test")
    try:
        with (
            running_agent(
                tmp_path,
                policy=pool_policy(1, 1),
                tables=tables,
                environ=slurm_environ(slurm),
                dask_insecure=True,  # the pool is under test here, not TLS
            ) as agent,
            agent.client() as client,
        ):
            first = wait_for(lambda: set(batch_jobs(slurm, "pool-held")), timeout=READY_S)
            assert len(first) == 1
            asked = time.monotonic()
            assert [n["state"] for n in _nodes(client)].count("booting") == 1

            # given up after the bound: cancelled, and a new batch job asked for
            bound = boot_timeout_s + READY_S * slack()
            second = wait_for(
                lambda: (jobs := set(batch_jobs(slurm, "pool-held"))) and not jobs & first and jobs,
                timeout=bound,
            )
            assert len(second) == 1
            assert time.monotonic() - asked >= boot_timeout_s * 0.5  # not before its bound
            assert _replaced(client, "boot_timeout") >= 1
            assert "did not join within" in agent.log.read_text()
            assert [n["state"] for n in _nodes(client)].count("booting") == 1  # still wanted

            # the node back: the batch job asked for starts and its worker joins
            slurm.run("scontrol", "update", f"nodename={NODE}", "state=resume")
            wait_for(lambda: len(_workers(client)) == 1, timeout=BOOT_S)
            job = _submit(client, work, "true")
            wait_for(lambda: _job(client, job)["state"] == "completed", timeout=JOB_S)
    finally:
        with contextlib.suppress(RuntimeError):  # resumed already
            slurm.run("scontrol", "update", f"nodename={NODE}", "state=resume")
