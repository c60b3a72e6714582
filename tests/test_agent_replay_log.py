"""The decision log: a recorded agent run, replayed through a fresh kernel,
gives the same starts on the same nodes (``htcsim replay-log``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from htcsim.agent.config import AgentConfig
from htcsim.agent.engine.replay_log import replay_decision_log
from htcsim.agent.server import Agent
from htcsim.agent.store.jobs import FINAL_STATES, AgentStore
from htcsim.cli.app import app
from htcsim.policy import Policy
from tests.agent_harness import wait_for


def _agent(state: Path, policy: Policy) -> tuple[Agent, TestClient, dict[str, str]]:
    config = AgentConfig(
        state_dir=state,
        allow_root=True,
        run_jobs_as="agent",
        nodes=2,
        cores_per_node=2,
        kill_grace_s=1,
    )
    agent = Agent(config, policy)
    agent.start()
    token = agent.admin_token or _token(state)
    return agent, TestClient(agent.app), {"Authorization": f"Bearer {token}"}


def _token(state: Path) -> str:
    import tomllib

    return str(tomllib.loads((state / "client.toml").read_text())["token"])


def _all_final(client: TestClient, headers: dict[str, str]) -> bool:
    jobs = client.get("/jobs", params={"limit": 1000}, headers=headers).json()["jobs"]
    return all(j["state"] in FINAL_STATES for j in jobs)


def _job(work: Path, command: str, **extra: Any) -> dict[str, Any]:
    return {"command": ["sh", "-c", command], "cwd": str(work), **extra}


@pytest.fixture
def recorded_run(tmp_path: Path) -> Path:
    """A run that uses every kind of kernel call: submits with priorities and
    dependencies, failures, a cancel, a hold and release, a drain and resume,
    a policy change and a restart of the agent."""
    work = tmp_path / "work"
    work.mkdir()
    state = tmp_path / "state"
    policy = Policy(order="multifactor", priority_weight_size=500.0, priority_weight_age=10.0)
    agent, client, headers = _agent(state, policy)
    try:
        post = lambda body: client.post("/jobs", json=body, headers=headers).json()  # noqa: E731
        first = post(_job(work, "sleep 0.3", cores=2, array="1-4"))["ids"]
        post(_job(work, "exit 1", after_ok=[first[0]]))
        bad = post(_job(work, "sleep 0.2; exit 2", cores=1))["ids"][0]
        post(_job(work, "true", after_not_ok=[bad]))
        post(_job(work, "true", after_ok=[bad]))  # cancelled: its parent fails
        held = post(_job(work, "true", hold=True))["ids"][0]
        doomed = post(_job(work, "sleep 30"))["ids"][0]
        client.post(f"/jobs/{doomed}/cancel", headers=headers)  # running: killed
        waiting = post(_job(work, "true", hold=True))["ids"][0]
        client.post(f"/jobs/{waiting}/cancel", headers=headers)  # held: the kernel cancels it
        client.post("/nodes/node1/drain", headers=headers)
        post(_job(work, "sleep 0.1", array="1-6"))
        time.sleep(0.5)
        client.post("/nodes/node1/resume", headers=headers)
        answer = client.put("/policy", json={"toml": '[queue]\norder = "sjf"\n'}, headers=headers)
        assert answer.status_code == 200, answer.text
        client.post(f"/jobs/{held}/release", headers=headers)
        post(_job(work, "sleep 0.2", cores=2, array="1-3"))
    finally:
        agent.stop()
    agent, client, headers = _agent(state, policy)  # a restart, with jobs left
    try:
        client.post("/jobs", json=_job(work, "sleep 0.1", array="1-5"), headers=headers)
        wait_for(lambda: _all_final(client, headers), timeout=60)
    finally:
        agent.stop()
    return state / "agent.db"


def test_a_recorded_run_replays_to_the_same_decisions(recorded_run: Path) -> None:
    store = AgentStore(recorded_run, readonly=True)
    rows = store.decisions()
    result = replay_decision_log(rows)
    assert result.differences == []
    assert result.restarts == 2
    started = sum(1 for j in store.jobs(limit=1000) if j["start_time"] is not None)
    assert result.starts == started > 20
    ops = {op for _, _, op, _, _ in rows}
    assert {"add", "submit", "deps", "finish", "cancel", "hold", "release", "drain"} <= ops
    assert {"node", "policy", "pass", "start", "restart"} <= ops
    # the command line says the same, and exits 0
    out = CliRunner().invoke(app, ["replay-log", "--db", str(recorded_run)])
    assert out.exit_code == 0, out.output
    assert "0 difference(s)" in out.output


def test_a_tampered_log_is_caught(recorded_run: Path) -> None:
    rows = AgentStore(recorded_run, readonly=True).decisions()
    k = next(i for i, r in enumerate(rows) if r[2] == "start")
    seq, t, op, job, data = rows[k]
    tampered = list(rows)
    tampered[k] = (seq, t, op, job, {"node": 1 - int(data["node"])})
    result = replay_decision_log(tampered)
    assert len(result.differences) >= 1
    assert f"job {job}" in result.differences[0] or str(job) in result.differences[0]


def test_the_live_history_reports_and_replays(recorded_run: Path, tmp_path: Path) -> None:
    """``htcsim report --since``: usage from the store, CSV tables and an SWF
    export that the simulator replays."""
    swf = tmp_path / "history.swf"
    tables = tmp_path / "usage"
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "report",
            "--since",
            "1h",
            "--db",
            str(recorded_run),
            "--swf",
            str(swf),
            "--csv",
            str(tables),
        ],
    )
    assert out.exit_code == 0, out.output
    store = AgentStore(recorded_run, readonly=True)
    ended = [j for j in store.jobs(limit=1000) if j["end_time"] is not None]
    assert f"({len(ended)} jobs)" in out.output.replace(",", "")
    assert (tables / "users.csv").read_text().splitlines()[0].startswith("user")
    replay = runner.invoke(app, ["simulate", str(swf)])
    assert replay.exit_code == 0, replay.output
    bad = runner.invoke(app, ["report", "--since", "yesterday-ish", "--db", str(recorded_run)])
    assert bad.exit_code == 2 and "yesterday-ish" in bad.output
