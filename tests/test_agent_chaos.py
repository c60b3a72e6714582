"""Chaos: a thousand short jobs while the agent's processes are killed at
seeded random moments; every job runs to completion exactly once, and the
decision log replays to the very decisions the agent made.

On the local backend the agent is killed (SIGKILL) three times and the job
shepherd twice; on Dask the agent three times and a worker twice. Each job
appends its id to a file as its last act, so the file counts real runs (on
Dask a run that ended in the instant before its worker was killed may run
again: the window the README documents, and only that, is allowed). The
moments are drawn from a seeded generator as numbers of completed jobs (plus a
short random delay), so a failure can be replayed with the same seed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from htcsim.agent.engine.replay_log import replay_decision_log
from htcsim.agent.store.jobs import AgentStore
from tests.agent_harness import JOB_S, READY_S, AgentProcess, running_agent, slack, wait_for
from tests.dask_harness import DaskSite

SEED = int(os.environ.get("HTCSIM_CHAOS_SEED", "20261207"))
N_JOBS = 1000
RECORD_WINDOW_S = 0.5
"""The documented window of the Dask backend (scaled by the load): a job that
ended this long before its worker was killed may not be in the worker's exit
journal yet (its reaping and the journal line), and runs again."""
SHEPHERD = "htcsim.agent.executors.local.shepherd"

pytestmark = pytest.mark.slow


def _states(client: httpx.Client) -> Counter[str]:
    out: Counter[str] = Counter()
    after = 0
    while True:
        page = client.get("/jobs", params={"limit": 1000, "after": after}).json()
        out.update(j["state"] for j in page["jobs"])
        if page["next"] is None:
            return out
        after = page["next"]


def _plan(rng: random.Random, faults: list[str]) -> list[tuple[int, float, str]]:
    """When to strike: (completed jobs, extra delay s, what), in order."""
    rng.shuffle(faults)
    marks = sorted(rng.sample(range(60, int(N_JOBS * 0.85)), len(faults)))
    return [(mark, rng.uniform(0.0, 0.3), fault) for mark, fault in zip(marks, faults, strict=True)]


def _submit(agent: AgentProcess, command: list[str], work: Path) -> list[int]:
    ids: list[int] = []
    with agent.client() as client:
        for _ in range(N_JOBS // 100):
            batch = [{"command": command, "cwd": str(work)} for _ in range(100)]
            answer = client.post("/jobs/batch", json={"jobs": batch})
            assert answer.status_code == 201, answer.text
            ids += answer.json()["ids"]
    assert len(set(ids)) == N_JOBS
    return ids


def _health(agent: AgentProcess) -> dict[str, object]:
    try:
        return dict(httpx.get(f"{agent.url}/healthz", timeout=5.0).json())
    except (httpx.HTTPError, ValueError):
        return {}


def _shepherd_worker(agent: AgentProcess) -> psutil.Process:
    """The shepherd process that runs the jobs (its pid as /healthz reports it,
    checked to be a shepherd of this agent's state directory)."""
    shepherd = _health(agent).get("shepherd")
    assert isinstance(shepherd, dict), _health(agent)
    worker = psutil.Process(int(shepherd["pid"]))
    cmdline = worker.cmdline()
    assert SHEPHERD in cmdline and any(a.startswith(str(agent.state_dir)) for a in cmdline)
    return worker


def _finish(
    agent: AgentProcess,
    ids: list[int],
    runs: Path,
    kills: int,
    worker_kills: list[float] | None = None,
) -> None:
    """Every job completed; each ran exactly once, by the file its runs append
    to (``id [end time]`` per line). ``worker_kills``: when Dask workers were
    SIGKILLed. A job whose run ended in the last ``RECORD_WINDOW_S`` before its
    worker's kill may run once more (the documented window: the exit died with
    the worker before the worker recorded it in its journal); any other
    second run fails the test, as does a third."""
    with agent.client() as client:
        wait_for(lambda: _states(client)["completed"] == N_JOBS, timeout=4 * JOB_S, every=0.25)
        assert _states(client) == Counter({"completed": N_JOBS})
    lines = [line.split() for line in runs.read_text().splitlines() if line.strip()]
    ran = Counter(int(fields[0]) for fields in lines)
    assert set(ran) == set(ids), "every accepted job ran"
    first_end: dict[int, float | None] = {}
    for fields in lines:
        first_end.setdefault(int(fields[0]), float(fields[1]) if len(fields) > 1 else None)
    window_s = RECORD_WINDOW_S * slack()
    explained = []
    for job, n in ran.items():
        end = first_end[job]
        kills_after = [kill - end for kill in worker_kills or []] if end is not None else []
        if n == 2 and any(0.0 <= gap <= window_s for gap in kills_after):
            explained.append(job)
    twice = {job: n for job, n in ran.items() if n != 1 and job not in explained}
    assert not twice, f"jobs ran more than once (seed {SEED}): {twice}"
    assert len(explained) <= len(worker_kills or []), explained  # one end per kill at most
    store = AgentStore(agent.state_dir / "agent.db", readonly=True)
    result = replay_decision_log(store.decisions())
    assert result.differences == [], f"seed {SEED}: {result.differences[:5]}"
    # one per start of the agent, and one per rebuild of the kernel (a launch the
    # dead shepherd never made is requeued through a rebuild)
    assert result.restarts >= kills + 1


def test_local_agent_and_shepherd_killed_at_random(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    runs = tmp_path / "runs.log"
    work = tmp_path / "work"
    work.mkdir()
    command = ["sh", "-c", f"sleep 0.{rng.randint(3, 6)}; echo $HTCSIM_JOB_ID >> {runs}"]
    plan = _plan(rng, ["agent"] * 3 + ["shepherd"] * 2)
    with running_agent(tmp_path, nodes=2, cores_per_node=4, kill_grace_s=1) as agent:
        ids = _submit(agent, command, work)
        for mark, delay, fault in plan:
            with agent.client() as client:
                wait_for(lambda c=client, m=mark: _states(c)["completed"] >= m, timeout=JOB_S)
            time.sleep(delay)
            if fault == "agent":
                agent.kill()
                agent.restart()
            else:
                worker = _shepherd_worker(agent)
                worker.send_signal(signal.SIGKILL)
                # supervised: a new shepherd, the agent healthy again, without help
                wait_for(
                    lambda w=worker: (
                        _health(agent).get("status") == "ok"
                        and _shepherd_worker(agent).pid != w.pid
                    ),
                    timeout=READY_S,
                )
        _finish(agent, ids, runs, kills=3)
        with agent.client() as client:
            failed = client.get("/jobs", params={"state": "failed", "limit": 10}).json()
            assert failed["jobs"] == []


def test_dask_agent_and_workers_killed_at_random(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    runs = tmp_path / "runs.log"
    work = tmp_path / "work"
    work.mkdir()
    # each run appends its id and when it ended, to the nanosecond
    last = f'echo "$HTCSIM_JOB_ID $(date +%s.%N)" >> {runs}'
    command = ["sh", "-c", f"sleep 0.{rng.randint(3, 6)}; {last}"]
    plan = _plan(rng, ["agent"] * 3 + ["worker"] * 2)
    worker_kills: list[float] = []
    site = DaskSite(tmp_path)
    try:
        with running_agent(
            tmp_path, backend="dask", **site.agent_settings(), heartbeat_timeout_s=5.0
        ) as agent:
            with agent.client() as client:
                wait_for(lambda: len(client.get("/nodes").json()["nodes"]) == 4, timeout=READY_S)
            ids = _submit(agent, command, work)
            for mark, delay, fault in plan:
                with agent.client() as client:
                    wait_for(lambda c=client, m=mark: _states(c)["completed"] >= m, timeout=JOB_S)
                time.sleep(delay)
                if fault == "agent":
                    agent.kill()
                    agent.restart()
                else:
                    name = rng.choice(sorted(site.workers))
                    worker_kills.append(time.time())
                    site.workers[name].send_signal(signal.SIGKILL)
                    site.workers[name].wait(READY_S)
                    site.workers[name] = site.start_worker(name)  # it comes back
            _finish(agent, ids, runs, kills=3, worker_kills=worker_kills)
    finally:
        site.stop()
