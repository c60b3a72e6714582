"""Submitting to a live agent: group commit, durability, and the Idempotency-Key's atomicity.

- Concurrent single-job submissions share turns of the scheduling loop (one
  transaction, one fsync for many), and each is durable when its 201 is
  sent: the agent killed with SIGKILL right after the last answer restarts
  with every job answered, each once.
- An Idempotency-Key is recorded in the transaction of its jobs: when the
  key cannot be written, the jobs are not stored either, and the retry
  creates them once.
- A turn lingering for process exits (group commit of exits) stops as soon
  as a command a caller waits on arrives.

Real agent processes (``tests/agent_harness.py``) and a real engine.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from htcsim.agent.config import AgentConfig, local_nodes
from htcsim.agent.engine import loop
from htcsim.agent.engine.loop import Engine
from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.state import _Command
from htcsim.agent.executors.base import JobExit
from htcsim.agent.store.jobs import NewJob
from htcsim.policy import Policy
from tests.agent_harness import READY_S, kill_jobs_of, running_agent

CLIENTS = 32
EACH = 8


def held(cwd: Path) -> dict[str, object]:
    """A job that waits on hold: nothing runs, the loop only accepts."""
    return {"command": ["true"], "cwd": str(cwd), "hold": True}


def test_concurrent_submits_share_commits_and_survive_sigkill(tmp_path: Path) -> None:
    with running_agent(tmp_path, nodes=1, cores_per_node=1) as agent:
        barrier = threading.Barrier(CLIENTS)

        def client(_: int) -> list[httpx.Response]:
            with agent.client() as c:
                barrier.wait(READY_S)
                return [c.post("/jobs", json=held(tmp_path)) for _ in range(EACH)]

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = [a for batch in pool.map(client, range(CLIENTS)) for a in batch]
        agent.kill()  # SIGKILL right after the last 201
        assert [a.status_code for a in answers] == [201] * (CLIENTS * EACH)
        ids = sorted(a.json()["ids"][0] for a in answers)
        assert len(set(ids)) == CLIENTS * EACH

        # the file, as the killed agent left it: every answered job, each once
        db = sqlite3.connect(agent.state_dir / "agent.db")
        rows = db.execute("SELECT id, submit_time FROM jobs ORDER BY id").fetchall()
        db.close()
        assert [r[0] for r in rows] == ids
        # a turn's jobs share its time: fewer times than jobs, so turns held many
        assert len({r[1] for r in rows}) < len(rows)

        agent.restart()
        with agent.client() as c:
            listed = c.get("/jobs", params={"limit": 10_000}).json()["jobs"]
        assert sorted(j["id"] for j in listed) == ids
        assert {j["state"] for j in listed} == {"held"}


def test_a_key_is_stored_with_its_jobs_or_neither_is(tmp_path: Path) -> None:
    """The key's row cannot be written (a trigger refuses it, as a crash between two
    commits would lose it): the submission fails whole, and its retry creates once."""
    with running_agent(tmp_path, nodes=1, cores_per_node=1) as agent, agent.client() as client:
        db = sqlite3.connect(agent.state_dir / "agent.db", timeout=READY_S)
        db.execute(
            "CREATE TRIGGER refuse_keys BEFORE INSERT ON idempotency "
            "BEGIN SELECT RAISE(ABORT, 'the key cannot be written'); END"
        )
        db.commit()
        key = {"Idempotency-Key": "nightly-42"}
        failed = client.post("/jobs", json=held(tmp_path), headers=key)
        assert failed.status_code == 500, failed.text
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0  # none without its key

        db.execute("DROP TRIGGER refuse_keys")
        db.commit()
        db.close()
        first = client.post("/jobs", json=held(tmp_path), headers=key)
        again = client.post("/jobs", json=held(tmp_path), headers=key)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert [j["id"] for j in client.get("/jobs").json()["jobs"]] == first.json()["ids"]


def test_concurrent_retries_with_one_key_create_once(tmp_path: Path) -> None:
    """The loop checks and records keys one submission at a time: many requests
    with the same key at once create the jobs once and all get the same answer."""
    with running_agent(tmp_path, nodes=1, cores_per_node=1) as agent:
        barrier = threading.Barrier(CLIENTS)

        def client(_: int) -> httpx.Response:
            with agent.client() as c:
                barrier.wait(READY_S)
                return c.post("/jobs", json=held(tmp_path), headers={"Idempotency-Key": "k"})

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(client, range(CLIENTS)))
        assert {a.status_code for a in answers} == {201}
        assert len({tuple(a.json()["ids"]) for a in answers}) == 1
        with agent.client() as c:
            assert len(c.get("/jobs").json()["jobs"]) == 1


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A real engine that is not started: the test drives its queue by hand."""
    config = AgentConfig(
        state_dir=tmp_path / "state", allow_root=True, run_jobs_as="agent", nodes=1
    )
    engine = Engine(config, Policy(), local_nodes(config))
    yield engine
    engine.executor.close()
    engine.store.close()
    kill_jobs_of(config.state_dir)


def test_a_waiting_caller_ends_the_linger_for_exits(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn that began with a process exit lingers for more exits; a submission
    queued behind it ends the linger at once (here the linger is longer than
    the test's bound, so lingering on would fail it)."""
    monkeypatch.setattr(loop, "LINGER_S", 2 * READY_S)
    ended = JobExit(1, exit_code=0, signal=0, end_time=time.time(), cpu_time_s=0, max_rss_mib=0)
    engine._commands.put(_Command("exit", (ended,)))
    job = NewJob(user="root", command=["true"], cwd=str(tmp_path), cores=1, walltime_s=60)
    submit: Future[object] = Future()
    args = (Principal("root", "admin"), [job], None, None, list)
    engine._commands.put(_Command("submit", args, submit))
    taken: list[list[_Command]] = []
    waiter = threading.Thread(target=lambda: taken.append(engine._take(1.0)), daemon=True)
    waiter.start()
    waiter.join(READY_S)
    assert taken, "the turn kept lingering after a submission arrived"
    assert [c.kind for c in taken[0]] == ["exit", "submit"]
    assert not submit.done()  # taken, not yet answered: the turn answers it
