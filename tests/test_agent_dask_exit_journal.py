"""A job that ended just before its Dask worker was killed is not run again.

The worker learns a job's exit when it reaps it; the agent, a few
milliseconds later, when it next asks. A worker killed in between used to
take the exit with it, and the agent requeued a job that had run to its end
(found by the chaos test: one job in about three runs ran twice). The worker
now appends each exit to a journal on its node; a worker started again under
the same name reads it, and the agent asks it for its predecessor's exits
before it requeues the lost worker's jobs (once they are fenced).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from htcsim.agent.executors.dask.exit_journal import ExitJournal, journal_path
from tests.agent_harness import JOB_S, READY_S, running_agent, wait_for
from tests.dask_harness import DaskSite

WORKERS = {"w-0": "cores=1,mem_mib=1000,gpus=0", "w-1": "cores=1,mem_mib=1000,gpus=0"}


def _exit(job: int, run: str, code: int = 0) -> dict[str, object]:
    return {"job": job, "run": run, "exit_code": code, "seq": job}


def test_the_journal_keeps_what_is_not_released(tmp_path: Path) -> None:
    journal = ExitJournal(tmp_path / "exits.jsonl")
    for job in (1, 2, 3):
        journal.append(_exit(job, f"r{job}"))
    journal.release([2], {})
    journal.append(_exit(3, "r3b", code=1))  # a later run of job 3: the last one wins
    with (tmp_path / "exits.jsonl").open("a") as f:
        f.write('{"job": 4, "run"')  # the worker died in the middle of a line
    assert journal.load() == {1: _exit(1, "r1"), 3: _exit(3, "r3b", code=1)}


def test_the_journal_is_rewritten_with_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from htcsim.agent.executors.dask import exit_journal

    monkeypatch.setattr(exit_journal, "COMPACT_AFTER", 3)
    path = tmp_path / "exits.jsonl"
    journal = ExitJournal(path)
    for job in (1, 2, 3):
        journal.append(_exit(job, "r"))
    journal.release([1, 2], {3: _exit(3, "r")})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [_exit(3, "r")]
    assert journal.load() == {3: _exit(3, "r")}


def test_the_journal_is_per_scheduler_and_name_and_private() -> None:
    one = journal_path("tcp://127.0.0.1:8786", "w-0")
    assert one == journal_path("tcp://127.0.0.1:8786", "w-0")
    assert one != journal_path("tcp://127.0.0.1:8787", "w-0")
    assert one != journal_path("tcp://127.0.0.1:8786", "w-1")
    assert f"-{os.getuid()}-" in one.name


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DaskSite]:
    site = DaskSite(tmp_path, WORKERS)
    for name in WORKERS:  # a journal an earlier site on this port left
        journal_path(site.address, name).unlink(missing_ok=True)
    try:
        yield site
    finally:
        site.stop()  # and its journals


@pytest.mark.parametrize("agent_then", ["resumed", "restarted"])
def test_an_exit_the_killed_worker_could_not_report_is_not_run_again(
    site: DaskSite, tmp_path: Path, agent_then: str
) -> None:
    """The agent is stopped (SIGSTOP) while the job ends, so the exit stays
    with the worker; the worker is then killed and started again under its
    name, and the agent resumed (it takes the exit from the new worker before
    requeueing) or killed and started again (its recovery takes it): the job
    is recorded completed, once, never requeued."""
    work = tmp_path / "work"
    work.mkdir()
    runs = work / "runs"
    with (
        running_agent(
            tmp_path, backend="dask", **site.agent_settings(), heartbeat_timeout_s=3.0
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 2, timeout=READY_S)
        body = {
            "command": ["sh", "-c", f"touch started; sleep 1; echo $HTCSIM_JOB_ID >> {runs}"],
            "cwd": str(work),
        }
        [job] = client.post("/jobs", json=body).json()["ids"]
        wait_for(lambda: (work / "started").exists(), timeout=JOB_S)  # its process runs
        node = client.get(f"/jobs/{job}").json()["node"]
        journal = ExitJournal(journal_path(site.address, node))
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: job in journal.load(), timeout=JOB_S)  # ended, reaped, kept
            site.workers[node].send_signal(signal.SIGKILL)
            site.workers[node].wait(READY_S)
            site.workers[node] = site.start_worker(node)
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        if agent_then == "restarted":
            agent.kill()
            agent.restart()

        def final() -> dict[str, object] | None:
            state: dict[str, object] = client.get(f"/jobs/{job}").json()
            return state if state["state"] not in ("pending", "running") else None

        ended = wait_for(final, timeout=JOB_S * 2)
        assert ended["state"] == "completed", ended
        assert ended["requeues"] == 0
        assert runs.read_text().split() == [str(job)]
        if agent_then == "resumed":
            assert "read from its journal" in agent.log.read_text()
