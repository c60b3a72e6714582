"""A dependency that can no longer be met, through a real agent: when a
parent ends, each dependent it excludes (afterok on a failure, a timeout or a
cancellation; afternotok on a success) is cancelled at once with a cause
naming the parent and the kind, its own dependents settled in turn, and the
decision log replays to the same decisions. Found live: an afternotok child
of a parent that succeeded stayed pending until the agent restarted."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from htcsim.agent.config import AgentConfig, local_nodes
from htcsim.agent.engine.loop import Engine
from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.replay_log import replay_decision_log
from htcsim.agent.engine.state import _Command
from htcsim.agent.store.jobs import AgentStore, NewJob
from htcsim.cli.app import app
from htcsim.policy import Policy
from tests.agent_harness import AgentProcess, kill_jobs_of, running_agent, wait_for

FINAL = ("completed", "failed", "cancelled", "timeout", "node_fail")
BOUND_S = 15  # seconds: far longer than a pass; a job left pending fails the test


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with running_agent(
        tmp_path_factory.mktemp("agent"), nodes=2, cores_per_node=2, kill_grace_s=1
    ) as running:
        yield running


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with agent.client() as c:
        yield c


def submit(client: httpx.Client, cwd: Path, script: str, **fields: Any) -> int:
    body = {"command": ["sh", "-c", script], "cwd": str(cwd), **fields}
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["ids"][0])


def final(client: httpx.Client, job_id: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["state"] in FINAL else None

    result: dict[str, Any] = wait_for(check, timeout=BOUND_S)
    return result


def cause(client: httpx.Client, job_id: int) -> str:
    return str(client.get(f"/jobs/{job_id}/history").json()["events"][-1]["cause"])


def never(client: httpx.Client, job_id: int, parent: int, kind: str, ended: str) -> None:
    job = final(client, job_id)
    assert job["state"] == "cancelled", job
    assert job["reason"] == "DependencyNeverSatisfied"
    assert job["start_time"] is None
    assert cause(client, job_id) == (
        f"dependency {kind} on job {parent} can never be satisfied (job {parent} ended {ended})"
    )


def test_afternotok_on_a_success_is_cancelled_with_its_dependents(
    client: httpx.Client, tmp_path: Path
) -> None:
    parent = submit(client, tmp_path, "sleep 0.5")
    not_ok = submit(client, tmp_path, "true", after_not_ok=[parent])
    grand_ok = submit(client, tmp_path, "true", after_ok=[not_ok])
    grand_any = submit(client, tmp_path, "true", after_any=[not_ok])
    ok = submit(client, tmp_path, "true", after_ok=[parent])
    any_ = submit(client, tmp_path, "true", after_any=[parent])
    assert final(client, parent)["state"] == "completed"
    never(client, not_ok, parent, "afternotok", "completed")
    # its dependents settle as on any cancelled parent: afterok never met,
    # afterany met (a cancellation is an end), as in the simulator
    never(client, grand_ok, not_ok, "afterok", "cancelled")
    assert final(client, grand_any)["state"] == "completed"
    for job_id in (ok, any_):
        assert final(client, job_id)["state"] == "completed"
    # decided at submit time on a parent that already completed, as afterok on a failure
    late = submit(client, tmp_path, "true", after_not_ok=[parent])
    never(client, late, parent, "afternotok", "completed")
    late_any = submit(client, tmp_path, "true", after_any=[parent])
    assert final(client, late_any)["state"] == "completed"


def test_afterok_on_a_failure_a_timeout_and_a_cancellation(
    client: httpx.Client, tmp_path: Path
) -> None:
    failing = submit(client, tmp_path, "sleep 0.3; exit 3")
    slow = submit(client, tmp_path, "sleep 60", walltime_s=1)
    held = submit(client, tmp_path, "true", hold=True)
    children = {
        p: (
            submit(client, tmp_path, "true", after_ok=[p]),
            submit(client, tmp_path, "true", after_not_ok=[p]),
            submit(client, tmp_path, "true", after_any=[p]),
        )
        for p in (failing, slow, held)
    }
    assert client.post(f"/jobs/{held}/cancel").status_code == 200
    for p, ended in ((failing, "failed"), (slow, "timeout"), (held, "cancelled")):
        assert final(client, p)["state"] == ended
        ok, not_ok, any_ = children[p]
        never(client, ok, p, "afterok", ended)
        assert final(client, not_ok)["state"] == "completed"
        assert final(client, any_)["state"] == "completed"


def test_the_log_replays_with_no_difference(client: httpx.Client, agent: AgentProcess) -> None:
    def idle() -> bool:
        jobs = client.get("/jobs", params={"limit": 1000}).json()["jobs"]
        return bool(jobs) and all(j["state"] in FINAL for j in jobs)

    wait_for(idle, timeout=BOUND_S)
    db = agent.state_dir / "agent.db"
    rows = AgentStore(db, readonly=True).decisions()
    result = replay_decision_log(rows)
    assert result.differences == []
    assert result.starts > 0
    out = CliRunner().invoke(app, ["replay-log", "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert "0 difference(s)" in out.output


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A real engine (store, kernel, shepherd) whose loop is not started: the
    test hands it its turns, so that it chooses what shares one."""
    config = AgentConfig(
        state_dir=tmp_path / "state", allow_root=True, run_jobs_as="agent", nodes=1
    )
    engine = Engine(config, Policy(), local_nodes(config))
    engine._shepherd_at_start()
    engine._recover()
    yield engine
    engine.executor.shutdown(kill_jobs=True)
    engine.store.close()
    kill_jobs_of(config.state_dir)


def test_a_child_submitted_in_the_turn_its_parent_is_cancelled_names_the_parent(
    engine: Engine, tmp_path: Path
) -> None:
    """A parent's end and a new dependent's submission can share one turn: the
    cascade it sets off (a dependency cancel) is decided in that turn and not
    yet stored when the submission reads its parents' states. The new child is
    cancelled with the cause it would have had a turn later. Found on a loaded
    machine: the cause said only "a dependency can never be satisfied"."""
    root = Principal("root", "admin")

    def job(**fields: Any) -> NewJob:
        return NewJob(
            user="root", command=["true"], cwd=str(tmp_path), cores=1, walltime_s=60, **fields
        )

    def submission(*jobs: NewJob) -> tuple[_Command, Future[list[int]]]:
        done: Future[list[int]] = Future()
        return _Command("submit", (root, list(jobs), None, None, list), done), done

    command, first = submission(job(), job(after=((0, "afternotok", 0),)))
    engine._turn([command])  # stored, admitted and the parent launched
    parent, not_ok = first.result(timeout=0)
    exits: list[_Command] = []

    def parent_exited() -> bool:  # /bin/true runs for real; its exit is queued, unapplied
        exits.extend(engine._take(0.1))
        return any(c.kind == "exit" for c in exits)

    wait_for(parent_exited)
    command, child = submission(job(depends_on=((not_ok, "afterok", 0),)))
    engine._turn([*exits, command])  # the parent's exit, then the submission
    [grand_ok] = child.result(timeout=0)
    states = engine.store.states_of([parent, not_ok, grand_ok])
    assert states == {parent: "completed", not_ok: "cancelled", grand_ok: "cancelled"}
    assert engine.store.history(grand_ok)[-1][2] == (
        f"dependency afterok on job {not_ok} can never be satisfied (job {not_ok} ended cancelled)"
    )
