"""The shepherd's supervision, end to end: a real agent, its real shepherd
(keeper and worker), real jobs, and the shepherd killed or stopped under them.

Every job sleeps, then appends its id to a shared file and exits with a code
of its own, so a test sees how many times each job really ran and whether the
exit status the agent recorded is the job's. What must hold: a dead or hung
worker is replaced (the time is measured and printed, against a generous
bound), the jobs it ran are adopted and end once with their own codes; when
the keeper is lost too, every process of the jobs is killed and the jobs are
requeued (never failed) and run to completion once; none of this counts
against a job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.agent_harness import (
    JOB_S,
    READY_S,
    AgentProcess,
    running_agent,
    slack,
    wait_for,
)
from tests.test_agent_executor import _zombie
from tests.test_agent_jobs import FINAL, get, submit, wait_state
from tests.test_agent_shepherd_security import containments

RESTART_BOUND_S = 5.0
"""Upper bound, times the load (``slack``), on a restart's measured time: the
design target is under a second, which the benchmark measures; this only
catches a restart that waited on something it should not."""


@pytest.fixture(params=["cgroup", "subreaper"])
def containment(request: pytest.FixtureRequest) -> str:
    if request.param not in containments():
        pytest.skip("no writable cgroup v2 with cgroup.kill here")
    return str(request.param)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def agent(tmp_path: Path, containment: str) -> Iterator[AgentProcess]:
    with running_agent(
        tmp_path, nodes=1, cores_per_node=8, kill_grace_s=1, containment=containment
    ) as running:
        yield running


def job(work: Path, code: int, sleep: float) -> list[str]:
    """Sleep, append the job's id to ``runs``, exit ``code``."""
    runs = work / "runs"
    return ["sh", "-c", f'sleep {sleep}; echo "$HTCSIM_JOB_ID" >> {runs}; exit {code}']


def gated(work: Path, code: int) -> list[str]:
    """Wait for the file ``go``, then append the job's id to ``runs`` and exit
    ``code``: a job certain to be running when its shepherd is lost, however
    slow the machine."""
    runs, go = work / "runs", work / "go"
    script = f'while [ ! -e {go} ]; do sleep 0.05; done; echo "$HTCSIM_JOB_ID" >> {runs}'
    return ["sh", "-c", f"{script}; exit {code}"]


def ran(work: Path) -> Counter[int]:
    runs = work / "runs"
    return Counter(int(x) for x in runs.read_text().split()) if runs.exists() else Counter()


def health(agent: AgentProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{agent.url}/healthz", timeout=30).json()
    return body


def start_jobs(
    client: httpx.Client, work: Path, codes: list[int], sleep: float | None
) -> list[int]:
    """Submit one job per code (``gated`` if ``sleep`` is None) and wait until
    each runs (its pid known)."""
    ids = [
        submit(client, work, gated(work, code) if sleep is None else job(work, code, sleep))
        for code in codes
    ]
    for job_id in ids:
        wait_for(lambda j=job_id: get(client, j)["state"] == "running" and get(client, j)["pid"])
    return ids


def processes_of(pid: int) -> list[tuple[int, float]]:
    """(pid, create time) of a job's main process and its descendants."""
    try:
        root = psutil.Process(pid)
        return [(p.pid, p.create_time()) for p in [root, *root.children(recursive=True)]]
    except psutil.Error:
        return []


def tree_with_children(pid: int) -> list[tuple[int, float]]:
    """``processes_of`` once the job's shell has a child (its sleep) too."""
    tree: list[tuple[int, float]] = wait_for(lambda: (t := processes_of(pid)) and len(t) > 1 and t)
    return tree


def still_running(pid: int, created: float) -> bool:
    """Whether that very process (pid and create time) runs (a zombie does not)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and not _zombie(pid)
    except psutil.Error:
        return False


def wait_restarted(agent: AgentProcess, restarts: int, old_pid: int) -> tuple[float, dict]:
    """Poll /healthz until a new worker serves, ``restarts`` counted, status ok;
    returns the seconds it took (from the call) and the health."""
    t0 = time.monotonic()

    def restarted() -> dict[str, Any] | None:
        now = health(agent)
        shepherd = now.get("shepherd") or {}
        done = (
            now["status"] == "ok"
            and shepherd.get("restarts") == restarts
            and shepherd.get("pid") != old_pid
        )
        return now if done else None

    now = wait_for(restarted, timeout=READY_S, every=0.01)
    return time.monotonic() - t0, now


def record(request: pytest.FixtureRequest, what: str, seconds: float) -> None:
    request.node.user_properties.append((what, round(seconds, 3)))
    print(f"\n{what}: {seconds:.3f} s (bound {RESTART_BOUND_S * slack():.1f} s)")
    assert seconds < RESTART_BOUND_S * slack(), f"{what} took {seconds:.2f} s"


def finished(client: httpx.Client, ids: list[int]) -> dict[int, dict[str, Any]]:
    return {j: wait_state(client, j, *FINAL, timeout=JOB_S) for j in ids}


# ------------------------------------------------------------------ the worker dies


def test_kill_9_of_the_worker_adopts_every_job_with_its_own_exit_code(
    agent: AgentProcess, work: Path, request: pytest.FixtureRequest
) -> None:
    codes = [0, 3, 0, 7, 1, 0]
    with agent.client() as client:
        ids = start_jobs(client, work, codes, sleep=3)
        pids = {j: get(client, j)["pid"] for j in ids}
        before = health(agent)["shepherd"]
        t0 = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        after_kill = [submit(client, work, job(work, 5, 0.2)) for _ in range(2)]  # right away
        seconds, now = wait_restarted(agent, 1, before["pid"])
        record(request, "kill -9 to a new worker serving", time.monotonic() - t0)
        assert seconds <= time.monotonic() - t0
        assert now["shepherd"]["keeper"] == before["keeper"], "the keeper restarted the worker"
        assert "killed by signal 9" in now["shepherd"]["last_restart_reason"]
        for job_id in ids:  # adopted where they run: same process, not started again
            row = get(client, job_id)
            assert row["state"] in ("running", *FINAL) and row["pid"] == pids[job_id]
        ends = finished(client, ids + after_kill)
        metrics = client.get("/metrics").text
    for job_id, code in zip(ids + after_kill, [*codes, 5, 5], strict=True):
        end = ends[job_id]
        assert end["exit_code"] == code, end
        assert end["state"] == ("completed" if code == 0 else "failed"), end
        assert end["requeues"] == 0, end
    assert ran(work) == Counter({j: 1 for j in ids + after_kill}), "every job ran exactly once"
    assert "htcsim_shepherd_restarts_total 1.0" in metrics
    assert "htcsim_shepherd_up 1.0" in metrics
    status = subprocess.run(
        [sys.executable, "-m", "htcsim", "agent", "status"],
        env=agent.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert ": ok" in status.stdout and "restarts: 1, last at" in status.stdout, status.stdout


def test_a_stopped_worker_is_killed_and_replaced_and_its_jobs_adopted(
    agent: AgentProcess, work: Path, request: pytest.FixtureRequest
) -> None:
    codes = [2, 0, 4]
    with agent.client() as client:
        ids = start_jobs(client, work, codes, sleep=3)
        pids = {j: get(client, j)["pid"] for j in ids}
        before = health(agent)["shepherd"]
        worker = psutil.Process(before["pid"])
        t0 = time.monotonic()
        os.kill(before["pid"], signal.SIGSTOP)
        try:
            _, now = wait_restarted(agent, 1, before["pid"])
            record(request, "SIGSTOP to a new worker serving", time.monotonic() - t0)
        finally:
            if still_running(worker.pid, worker.create_time()):
                os.kill(worker.pid, signal.SIGCONT)
        assert "did not answer" in now["shepherd"]["last_restart_reason"]
        assert not still_running(worker.pid, worker.create_time()), "the hung worker was killed"
        for job_id in ids:
            assert get(client, job_id)["pid"] == pids[job_id]
        ends = finished(client, ids)
    for job_id, code in zip(ids, codes, strict=True):
        assert (ends[job_id]["exit_code"], ends[job_id]["requeues"]) == (code, 0), ends[job_id]
    assert ran(work) == Counter({j: 1 for j in ids})


# ------------------------------------------------------------------ keeper and worker die


def test_keeper_and_worker_killed_kills_every_job_process_and_requeues_the_jobs(
    agent: AgentProcess, work: Path, request: pytest.FixtureRequest
) -> None:
    codes = [0, 6, 0]
    with agent.client() as client:
        ids = start_jobs(client, work, codes, sleep=None)
        trees = {j: tree_with_children(get(client, j)["pid"]) for j in ids}
        before = health(agent)["shepherd"]
        t0 = time.monotonic()
        os.kill(before["keeper"], signal.SIGKILL)
        os.kill(before["pid"], signal.SIGKILL)
        _, now = wait_restarted(agent, 1, before["pid"])
        record(request, "keeper and worker killed to a new shepherd serving", time.monotonic() - t0)
        assert now["shepherd"]["keeper"] != before["keeper"]
        left = [p for tree in trees.values() for p in tree if still_running(*p)]
        assert not left, f"processes of the killed jobs still run: {left}"
        (work / "go").touch()  # the requeued runs may now end
        ends = finished(client, ids)
        histories = {
            j: [e["cause"] for e in client.get(f"/jobs/{j}/history").json()["events"]] for j in ids
        }
    for job_id, code in zip(ids, codes, strict=True):
        end = ends[job_id]
        assert end["exit_code"] == code and end["requeues"] == 1, end
        assert any(c.startswith("requeued: killed") for c in histories[job_id]), histories
    assert ran(work) == Counter({j: 1 for j in ids}), "killed before the end, then once whole"


# ------------------------------------------------------------------ while the agent is down


def test_the_worker_killed_while_the_agent_is_down_keeps_the_exit_codes(
    agent: AgentProcess, work: Path
) -> None:
    """Agent killed, then its shepherd's worker, then the agent restarted: the
    jobs are adopted (those that ended meanwhile with their codes, kept by the
    keeper), and the restart that happened while the agent was down is counted."""
    codes = [0, 9, 0, 5]
    with agent.client() as client:
        short = start_jobs(client, work, codes[:2], sleep=1)
        long = start_jobs(client, work, codes[2:], sleep=6)
        pids = {j: get(client, j)["pid"] for j in short + long}
        before = health(agent)["shepherd"]
    agent.kill()
    os.kill(before["pid"], signal.SIGKILL)
    # the short jobs end while neither the agent nor the first worker watches them
    trees = [p for j in short for p in processes_of(pids[j])]
    wait_for(lambda: not any(still_running(*p) for p in trees), timeout=READY_S)
    agent.restart()
    now = health(agent)
    assert now["status"] == "ok"
    assert now["shepherd"]["keeper"] == before["keeper"] and now["shepherd"]["restarts"] == 1
    assert "while the agent was down" in now["shepherd"]["last_restart_reason"]
    with agent.client() as client:
        for job_id in long:
            row = get(client, job_id)
            assert row["state"] in ("running", *FINAL) and row["pid"] == pids[job_id]
        ends = finished(client, short + long)
        assert "htcsim_shepherd_restarts_total 1.0" in client.get("/metrics").text
    for job_id, code in zip(short + long, codes, strict=True):
        assert (ends[job_id]["exit_code"], ends[job_id]["requeues"]) == (code, 0), ends[job_id]
    assert ran(work) == Counter({j: 1 for j in short + long})


def test_keeper_and_worker_killed_while_the_agent_is_down_requeues_the_jobs(
    agent: AgentProcess, work: Path
) -> None:
    """The agent's own restart path: its shepherd gone entirely while it was down,
    the jobs' processes still running untracked; the agent's new shepherd kills
    them (found by pid and start time, or cgroup) and the jobs are requeued, not
    failed, and run to completion once."""
    codes = [0, 2]
    with agent.client() as client:
        ids = start_jobs(client, work, codes, sleep=None)
        trees = {j: processes_of(get(client, j)["pid"]) for j in ids}
        before = health(agent)["shepherd"]
    agent.kill()
    os.kill(before["keeper"], signal.SIGKILL)
    os.kill(before["pid"], signal.SIGKILL)
    agent.restart()
    left = [p for tree in trees.values() for p in tree if still_running(*p)]
    assert not left, f"processes of the jobs still run untracked: {left}"
    (work / "go").touch()
    with agent.client() as client:
        ends = finished(client, ids)
        causes = {
            j: [e["cause"] for e in client.get(f"/jobs/{j}/history").json()["events"]] for j in ids
        }
    for job_id, code in zip(ids, codes, strict=True):
        assert (ends[job_id]["exit_code"], ends[job_id]["requeues"]) == (code, 1), ends[job_id]
        assert any(c.startswith("requeued: killed") for c in causes[job_id]), causes[job_id]
    assert ran(work) == Counter({j: 1 for j in ids})
    assert health(agent)["shepherd"]["restarts"] == 1  # the shepherd replaced while down


def test_a_job_being_cancelled_when_its_shepherd_is_lost_ends_cancelled(
    tmp_path: Path, containment: str, work: Path
) -> None:
    """A lost job that was asked to end (cancel, walltime) ends as asked, not
    requeued. It ignores SIGTERM and the grace before SIGKILL is long: only the
    loss of its shepherd ends it within the test."""
    ready = work / "ready"
    stubborn = f"trap '' TERM; touch {ready}; while :; do sleep 0.1; done"
    with (
        running_agent(
            tmp_path / "slow", nodes=1, cores_per_node=2, kill_grace_s=3600, containment=containment
        ) as agent,
        agent.client() as client,
    ):
        job_id = submit(client, work, ["sh", "-c", stubborn])
        wait_for(ready.exists)
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
        before = health(agent)["shepherd"]
        os.kill(before["keeper"], signal.SIGKILL)
        os.kill(before["pid"], signal.SIGKILL)
        end = wait_state(client, job_id, *FINAL)
    assert (end["state"], end["requeues"]) == ("cancelled", 0), end
