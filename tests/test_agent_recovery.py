"""Restart and recovery of the agent: kill -9 it mid-run, restart it, lose nothing.

Every job appends its id to a shared file when it runs, so the test counts how
many times each job really ran; the store says how each job ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from htcsim.agent.store.jobs import AgentStore
from tests.agent_harness import JOB_S, READY_S, running_agent, wait_for


def _states(client: httpx.Client) -> Counter[str]:
    out: Counter[str] = Counter()
    after = 0
    while True:
        page = client.get("/jobs", params={"limit": 1000, "after": after}).json()
        out.update(j["state"] for j in page["jobs"])
        if page["next"] is None:
            return out
        after = page["next"]


def test_500_jobs_survive_three_kill_9(tmp_path: Path) -> None:
    """Submit 500 jobs, SIGKILL the agent three times while they run, restart it
    each time: every job ends completed and ran exactly once."""
    runs = tmp_path / "runs.log"
    work = tmp_path / "work"
    work.mkdir()
    command = ["sh", "-c", f"sleep 0.05; echo {{id}} >> {runs}"]
    with running_agent(tmp_path, nodes=2, cores_per_node=4, kill_grace_s=1) as agent:
        with agent.client() as client:
            ids: list[int] = []
            for _ in range(5):
                batch = [{"command": command, "cwd": str(work)} for _ in range(100)]
                answer = client.post("/jobs/batch", json={"jobs": batch})
                assert answer.status_code == 201, answer.text
                ids += answer.json()["ids"]
        assert len(set(ids)) == 500
        for _kill in range(3):
            with agent.client() as client:
                target = _states(client)["completed"] + 40
                # let it run a while, then crash it in the middle of the work
                wait_for(lambda c=client, t=target: _states(c)["completed"] >= t, timeout=JOB_S)
            agent.kill()
            time.sleep(0.3)  # jobs keep running and ending while the agent is down
            agent.restart()
        with agent.client() as client:
            wait_for(lambda: _states(client)["completed"] == 500, timeout=3 * JOB_S, every=0.2)
            states = _states(client)
        assert states == Counter({"completed": 500})
    ran = Counter(int(line) for line in runs.read_text().split())
    assert set(ran) == set(ids), "every accepted job ran"
    twice = {job: n for job, n in ran.items() if n != 1}
    assert not twice, f"jobs ran more than once: {twice}"
    store = AgentStore(agent.state_dir / "agent.db")
    restarts = [d for d in store.decisions() if d[2] == "restart"]
    assert len(restarts) == 4
    for job in (ids[0], ids[250], ids[-1]):
        assert store.history(job)[-1][1] == "completed"


def test_a_job_running_across_a_crash_is_adopted_and_its_exit_kept(tmp_path: Path) -> None:
    """A job that outlives the agent is re-adopted (same pid, not started again)
    and its exit code, written while the agent was down, is recorded."""
    work = tmp_path / "work"
    work.mkdir()
    marker = work / "started"
    with running_agent(tmp_path, nodes=1, cores_per_node=2, kill_grace_s=1) as agent:
        with agent.client() as client:
            go = work / "go"  # the job runs until the test creates this file
            script = f"echo x >> {marker}; while [ ! -e {go} ]; do sleep 0.05; done; exit 7"
            long = client.post(
                "/jobs", json={"command": ["sh", "-c", script], "cwd": str(work)}
            ).json()["ids"][0]
            wait_for(lambda: client.get(f"/jobs/{long}").json()["pid"])
            pid = client.get(f"/jobs/{long}").json()["pid"]
        agent.kill()
        agent.restart()
        with agent.client() as client:
            job = client.get(f"/jobs/{long}").json()
            assert job["state"] == "running" and job["pid"] == pid
            go.touch()
            wait_for(lambda: client.get(f"/jobs/{long}").json()["state"] == "failed", timeout=JOB_S)
            assert client.get(f"/jobs/{long}").json()["exit_code"] == 7
        # and one that ends while the agent is down
        with agent.client() as client:
            short = client.post(
                "/jobs", json={"command": ["sh", "-c", "sleep 0.5; exit 4"], "cwd": str(work)}
            ).json()["ids"][0]
            short_pid = wait_for(lambda: client.get(f"/jobs/{short}").json()["pid"])
        agent.kill()
        # it ends while the agent is down: wait for its process to end, not a fixed time
        wait_for(lambda: _ended(short_pid), timeout=READY_S)
        agent.restart()
        with agent.client() as client:
            wait_for(lambda: client.get(f"/jobs/{short}").json()["state"] == "failed")
            assert client.get(f"/jobs/{short}").json()["exit_code"] == 4
    assert marker.read_text() == "x\n", "the adopted job was not started again"


def _ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_second_agent_on_the_same_state_is_refused(tmp_path: Path) -> None:
    with running_agent(tmp_path, nodes=1) as agent:
        other = subprocess.run(
            [*agent.args[:-2], "--config", agent.args[-1], "--port", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 2
        assert "another agent" in other.stderr and str(agent.proc.pid) in other.stderr


def test_a_running_job_the_shepherd_knows_nothing_of_is_requeued_not_failed(
    tmp_path: Path,
) -> None:
    """The store says a job runs, the shepherd the restarted agent finds has no
    trace of it (its run directory was wiped while everything was down, as a
    tmpfs is by a reboot) and none of its processes runs: it is requeued by
    the policy and runs again once, never recorded failed."""
    work = tmp_path / "work"
    work.mkdir()
    runs, go = work / "runs", work / "go"
    with running_agent(tmp_path, nodes=1, cores_per_node=2, kill_grace_s=1) as agent:
        with agent.client() as client:  # the first run waits for ``go``, which comes after it
            script = f'while [ ! -e {go} ]; do sleep 0.05; done; echo "$HTCSIM_JOB_ID" >> {runs}'
            job = client.post("/jobs", json={"command": ["sh", "-c", script], "cwd": str(work)})
            job_id = job.json()["ids"][0]
            pid = wait_for(lambda: client.get(f"/jobs/{job_id}").json()["pid"])
            shepherd = client.get("/healthz").json()["shepherd"]
        agent.kill()
        for victim in (shepherd["keeper"], shepherd["pid"]):
            os.kill(victim, signal.SIGKILL)
        os.killpg(pid, signal.SIGKILL)  # the job's session: sh and its sleep
        wait_for(lambda: _ended(pid), timeout=READY_S)
        (agent.state_dir / "run" / "journal.jsonl").write_text("")  # no trace of the job
        go.touch()
        agent.restart()
        with agent.client() as client:
            wait_for(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "completed")
            assert client.get(f"/jobs/{job_id}").json()["requeues"] == 1
            events = client.get(f"/jobs/{job_id}/history").json()["events"]
            assert "requeued: its process was gone when the agent restarted" in [
                e["cause"] for e in events
            ]
            assert "failed" not in [e["state"] for e in events]
    assert runs.read_text().split() == [str(job_id)], "ran to its end once"
