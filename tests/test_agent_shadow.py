"""Shadow mode: a candidate policy run on the agent's decision log, without acting.

The twin is checked against hand-computed starts (the worked example of
``htcsim/agent/shadow/twin.py``), against the agent itself (the active policy as
candidate repeats the log: no difference) and against the simulator
(another policy starts the jobs when ``htcsim.sim.simulate`` does for the
same arrivals and runtimes): on logs made without an agent
(``tests/agent_logs.py``), then on real agents over a socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from htcsim.agent.api.auth import add_token
from htcsim.agent.config import AgentConfig
from htcsim.agent.server import Agent, AgentStartError
from htcsim.agent.shadow.twin import LateRowError, ShadowTwin
from htcsim.agent.store.jobs import FINAL_STATES, AgentStore
from htcsim.cli.app import app
from htcsim.kernel import NodeState
from htcsim.model import Machine
from htcsim.policy import Policy, load_policy
from htcsim.sim import simulate
from tests.agent_harness import kill_jobs_of, running_agent, wait_for
from tests.agent_logs import Decision, LogWriter, random_workload, record_agent_log, workload

T = 1_700_000_000
FAR = T + 10**8
"""A floor past every time of a test log: the log is complete."""
MULTIFACTOR = Policy(
    order="multifactor", priority_weight_fairshare=1000.0, priority_weight_age=10.0
)


def twin_of(rows: list[Decision], candidate: Policy, floor: int = FAR) -> ShadowTwin:
    twin = ShadowTwin(candidate)
    twin.feed(rows)
    twin.advance(floor)
    return twin


def twin_starts(twin: ShadowTwin, job_ids: Any) -> np.ndarray:
    """The twin's first start of each job (-1: not started, or not in the log yet)."""
    jobs = twin.live.jobs
    return np.array([jobs[int(j)].twin_start if int(j) in jobs else -1 for j in job_ids])


def live_starts(rows: list[Decision]) -> dict[int, int]:
    return {int(j or 0): t for _, t, op, j, _ in rows if op == "start"}


# ------------------------------------------------------------------ hand-made logs


def worked_example() -> LogWriter:
    """One 1-core node; A (60 s asked, runs 10), B (30, runs 5), C (10, runs 2)
    submitted at T under fcfs: live A T..+10, B +10..+15, C +15..+17."""
    log = LogWriter(T, [("n0", 1)], Policy(order="fcfs"))
    for job, walltime in ((1, 60), (2, 30), (3, 10)):
        log.submit(T, job, walltime)
    assert log.pass_(T) == [(1, 0)]
    for job, end, following in ((1, 10, 2), (2, 15, 3), (3, 17, None)):
        log.finish(T + end, job)
        assert log.pass_(T + end) == ([(following, 0)] if following else [])
    return log


def test_the_worked_example_waits_for_runtimes_then_decides_as_sjf() -> None:
    rows = worked_example().rows
    twin = ShadowTwin(Policy(order="sjf"))
    horizons = {}
    for row in rows:  # one row at a time, as a reader polling the store would
        twin.feed([row])
        twin.advance(twin.latest_s)
        horizons[row[1] - T] = twin.horizon_s
    # the twin started C at T; until C ends live (its runtime could be anything) it
    # cannot decide past T
    assert horizons[15] == T - 1
    assert horizons[17] == T + 16
    assert twin_starts(twin, [1, 2, 3]).tolist() == [T + 7, T + 2, T]
    tally = twin.tally
    assert tally.compared == 3 and len(tally.differences) == 3
    assert sorted(tally.twin_waits) == [0, 2, 7] and sorted(tally.live_waits) == [0, 10, 15]
    assert twin.active_label == "fcfs+easy"
    assert twin_of(rows, Policy(order="fcfs")).tally.differences == []


def test_a_cancel_ends_the_twins_run_where_the_agent_got_it() -> None:
    """B (10 s asked) waits behind A (100 s) live and is cancelled at T+5; the sjf
    twin started it at T, so it runs there until T+5, then A (10 s) from T+5. C
    (200 s asked), cancelled live at T+12 while it ran, is cancelled while it
    still waits in the twin."""
    log = LogWriter(T, [("n0", 1)], Policy(order="fcfs"))
    for job, walltime in ((1, 100), (2, 10), (3, 200)):
        log.submit(T, job, walltime)
    assert log.pass_(T) == [(1, 0)]
    before_cancel = len(log.rows)
    log.cancel(T + 5, 2)
    log.pass_(T + 5)
    log.finish(T + 10, 1)
    assert log.pass_(T + 10) == [(3, 0)]
    log.finish(T + 12, 3, 0, cancelled=True)
    log.pass_(T + 12)
    twin = ShadowTwin(Policy(order="sjf"))
    twin.feed(log.rows[:before_cancel])
    twin.advance(T + 4)
    assert twin.horizon_s == T - 1  # B's runtime is unknown: it never ran live
    twin.feed(log.rows[before_cancel:])
    twin.advance(FAR)
    assert twin_starts(twin, [1, 2, 3]).tolist() == [T + 5, T, -1]
    assert twin.tally.compared == 1  # A; B never started live, C never in the twin
    assert twin.tally.twin_only == {2} and twin.tally.live_only == {3}


def test_node_events_and_a_restart_keep_the_twin_on_the_agents_decisions() -> None:
    """Autoscaled and failing nodes, a drain, a restart that adopts a running
    job and requeues a pending one: the active policy as candidate agrees."""
    up, booting, off = (int(NodeState[s]) for s in ("UP", "BOOTING", "OFF"))
    nodes = [("n0", 1), ("n1", 1)]
    policy = Policy()
    log = LogWriter(T, nodes, policy, states=[up, off])
    for job in (1, 2, 3, 4):
        log.submit(T, job, 100)
    log.pass_(T)
    log.autoscale(T, [1], [])
    log.node(T + 3, 1, up)
    log.pass_(T + 3)
    log.fail(T + 8, 0)  # job 1 is requeued
    log.node(T + 8, 0, booting)
    log.pass_(T + 8)
    log.node(T + 12, 0, up)
    log.pass_(T + 12)
    log.finish(T + 20, 2)
    log.pass_(T + 20)
    log.restart(T + 25, nodes, policy, running=[(1, 0, T + 12), (3, 1, T + 20)], pending=[(4, 100)])
    log.pass_(T + 25)
    log.finish(T + 30, 3)
    log.pass_(T + 30)
    log.finish(T + 40, 1)
    log.pass_(T + 40)
    log.finish(T + 45, 4)
    log.pass_(T + 45)
    ops = {op for _, _, op, _, _ in log.rows}
    assert {"autoscale", "fail", "node", "restart", "adopt"} <= ops
    twin = twin_of(log.rows, policy)
    assert twin.tally.differences == []
    assert twin.tally.compared == 4
    assert twin_starts(twin, [1, 2, 3, 4]).tolist() == [T, T + 3, T + 20, T + 30]


def test_a_row_for_a_time_already_simulated_is_refused() -> None:
    rows = worked_example().rows
    twin = twin_of(rows, Policy(order="sjf"), floor=T + 16)
    late = (len(rows) + 1, T + 14, "pass", None, {})
    with pytest.raises(LateRowError, match="twin is at"):
        twin.feed([late])


# ------------------------------------------------------------------ recorded workloads


MACHINE = Machine(n_nodes=3, cores_per_node=4)


@pytest.mark.parametrize(
    "policy",
    [Policy(), Policy(order="sjf", backfill="none"), MULTIFACTOR, Policy(backfill="conservative")],
    ids=lambda p: p.label,
)
def test_the_active_policy_as_candidate_repeats_every_decision(policy: Policy) -> None:
    load = random_workload(400, MACHINE, seed=11)
    rows = record_agent_log(load, policy)
    twin = ShadowTwin(policy)
    for k in range(0, len(rows), 37):
        twin.feed(rows[k : k + 37])
        twin.advance(twin.latest_s)
    twin.advance(FAR)
    assert twin.tally.compared == len(load)
    assert twin.tally.differences == []
    assert twin.tally.twin_waits == twin.tally.live_waits


CANDIDATES = [
    (Policy(), Policy(order="sjf")),
    (Policy(order="sjf"), Policy(backfill="none")),
    (MULTIFACTOR, Policy(order="sjf", placement="best_fit")),
    (Policy(backfill="conservative"), Policy(placement="spread")),
    (Policy(), MULTIFACTOR),
    (Policy(order="sjf"), Policy(backfill="conservative")),
    (MULTIFACTOR, Policy(order="multifactor", backfill="conservative")),
]


@pytest.mark.parametrize(
    ("active", "candidate"), CANDIDATES, ids=lambda p: f"{p.label}/{p.placement}"
)
def test_another_policy_starts_jobs_when_the_simulator_does(
    active: Policy, candidate: Policy
) -> None:
    load = random_workload(400, MACHINE, seed=12)
    rows = record_agent_log(load, active)
    twin = twin_of(rows, candidate)
    expected = simulate(load, candidate).start_s
    assert twin_starts(twin, load.jobs["job_id"]).tolist() == expected.tolist()
    live = live_starts(rows)
    moved = {int(j) for j, s in zip(load.jobs["job_id"], expected, strict=True) if s != live[j]}
    assert moved
    assert {c.job_id for c in twin.tally.differences if c.live_start_s != c.twin_start_s} == moved


def test_reading_the_log_in_pieces_never_changes_a_final_decision() -> None:
    load = random_workload(300, MACHINE, seed=13)
    rows = record_agent_log(load, Policy())
    whole = twin_starts(twin_of(rows, Policy(order="sjf")), load.jobs["job_id"])
    twin = ShadowTwin(Policy(order="sjf"))
    rng = np.random.default_rng(3)
    k, horizon = 0, T - 1
    while k < len(rows):
        n = int(rng.integers(1, 60))
        twin.feed(rows[k : k + n])
        k += n
        twin.advance(twin.latest_s)
        assert twin.horizon_s is not None and twin.horizon_s >= horizon
        horizon = twin.horizon_s
        starts = twin_starts(twin, load.jobs["job_id"])
        final = (starts >= 0) & (starts <= horizon)
        assert (starts[final] == whole[final]).all()
    twin.advance(FAR)
    assert (twin_starts(twin, load.jobs["job_id"]) == whole).all()


# ------------------------------------------------------------------ a real agent


def shadow_report(client: httpx.Client, n: int) -> dict[str, Any]:
    """GET /shadow, once every job is compared."""

    def done() -> dict[str, Any] | None:
        report: dict[str, Any] = client.get("/shadow", params={"limit": 100}).json()
        return report if report["summary"]["jobs_compared"] >= n else None

    result: dict[str, Any] = wait_for(done, timeout=30, every=0.2)
    return result


def all_ended(client: httpx.Client, n: int) -> bool:
    jobs = client.get("/jobs", params={"limit": 1000}).json()["jobs"]
    return len(jobs) == n and all(j["state"] in FINAL_STATES for j in jobs)


def test_the_same_policy_in_shadow_finds_no_difference(tmp_path: Path) -> None:
    """Several users' short jobs contend for 4 cores under fairshare, one of them
    held and released, one cancelled while it runs; the shadow runs the same
    policy file: every job compared, none started differently."""
    policy = '[queue]\norder = "multifactor"\n[priority]\nweight_fairshare = 1000.0\n'
    policy += "weight_age = 10.0\n"
    settings = {"nodes": 2, "cores_per_node": 2, "kill_grace_s": 1, "shadow_interval_s": 0.5}
    with running_agent(
        tmp_path, policy=policy, shadow_policy=str(tmp_path / "policy.toml"), **settings
    ) as agent:
        tokens = {u: add_token(agent.state_dir / "tokens.toml", u) for u in ("ann", "bob", "cy")}
        with agent.client(tokens["ann"]) as client:
            doomed = client.post("/jobs", json={"command": ["sleep", "30"], "cwd": str(tmp_path)})
            doomed_id = doomed.json()["ids"][0]
            wait_for(lambda: client.get(f"/jobs/{doomed_id}").json()["state"] == "running")
        with agent.client(tokens["bob"]) as client:
            held = {"command": ["sleep", "0.5"], "cwd": str(tmp_path), "hold": True}
            held_id = client.post("/jobs", json=held).json()["ids"][0]
        n = 2
        for round_ in range(2):
            for user, token in tokens.items():
                sleeps = [0.6 + 0.5 * ((round_ + k + len(user)) % 3) for k in range(2)]
                jobs = [{"command": ["sleep", str(s)], "cwd": str(tmp_path)} for s in sleeps]
                with agent.client(token) as client:
                    answer = client.post("/jobs/batch", json={"jobs": jobs})
                    assert answer.status_code == 201, answer.text
                n += len(jobs)
        with agent.client() as client:
            assert client.post(f"/jobs/{held_id}/release").status_code == 200
            assert client.post(f"/jobs/{doomed_id}/cancel").status_code == 200
            wait_for(lambda: all_ended(client, n), timeout=60, every=0.2)
            report = shadow_report(client, n)
            metrics = client.get("/metrics").text
        summary = report["summary"]
        assert summary["differences"] == 0 and report["differences"] == []
        assert (summary["shadow_only"], summary["live_only"], summary["error"]) == (0, 0, None)
        assert summary["policy"] == summary["active_policy"] == "multifactor+easy"
        assert summary["shadow_wait_s"] == summary["live_wait_s"]
        assert summary["live_wait_s"]["p95"] > 0  # they did contend
        assert f"htcsim_shadow_jobs_compared {float(n)}" in metrics
        assert "htcsim_shadow_differences 0.0" in metrics
        assert f"htcsim_shadow_wait_seconds_count {float(n)}" in metrics
        out = CliRunner().invoke(app, ["shadow"], env=agent.env())
        assert out.exit_code == 0, out.output
        assert f"{n} jobs compared, 0 started differently" in out.output


def test_another_policy_in_shadow_is_what_the_simulator_gives(tmp_path: Path) -> None:
    """fcfs live, sjf in shadow, six jobs of distinct lengths in one request on one
    2-core node: the shadow's starts are simulate's for the recorded submit time
    and runtimes, and its differences are the jobs the simulator moved."""
    walltimes = [600, 500, 400, 300, 200, 100]
    sleeps = [1.5, 0.9, 1.2, 0.6, 1.8, 0.8]
    candidate = tmp_path / "candidate.toml"
    candidate.write_text('[queue]\norder = "sjf"\n')
    settings = {"nodes": 1, "cores_per_node": 2, "mem_mib_per_node": 4096, "kill_grace_s": 1}
    with running_agent(
        tmp_path,
        policy='[queue]\norder = "fcfs"\n',
        shadow_policy=str(candidate),
        shadow_interval_s=0.5,
        **settings,
    ) as agent:
        jobs = [
            {"command": ["sleep", str(s)], "cwd": str(tmp_path), "walltime_s": w}
            for w, s in zip(walltimes, sleeps, strict=True)
        ]
        with agent.client() as client:
            ids = client.post("/jobs/batch", json={"jobs": jobs}).json()["ids"]
            wait_for(lambda: all_ended(client, len(ids)), timeout=60, every=0.2)
            report = shadow_report(client, len(ids))
        rows = AgentStore(agent.state_dir / "agent.db", readonly=True).decisions()
    submit = {j: t for _, t, op, j, _ in rows if op == "submit"}
    start = live_starts(rows)
    finish = {j: t for _, t, op, j, _ in rows if op == "finish"}
    load = workload(
        [submit[j] for j in ids],
        [finish[j] - start[j] for j in ids],
        walltimes,
        Machine(n_nodes=1, cores_per_node=2, mem_mib_per_node=4096),
    )
    load.jobs["job_id"] = ids
    expected = dict(zip(ids, simulate(load, load_policy(candidate)).start_s.tolist(), strict=True))
    shown = {d["job_id"]: d for d in report["differences"]}
    shadow = {j: shown[j]["shadow_start"] if j in shown else start[j] for j in ids}
    assert shadow == expected
    moved = {j for j in ids if expected[j] != start[j]}
    assert moved and set(shown) == moved
    summary = report["summary"]
    assert (summary["jobs_compared"], summary["differences"]) == (len(ids), len(moved))
    assert summary["policy"] == "sjf+easy" and summary["active_policy"] == "fcfs+easy"
    waits = [expected[j] - submit[j] for j in ids]
    assert summary["shadow_wait_s"]["mean"] == pytest.approx(np.mean(waits))
    assert summary["horizon"] >= max(expected.values())


# ------------------------------------------------------------------ settings


def test_a_bad_candidate_policy_stops_the_start_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "candidate.toml"
    bad.write_text('[queue]\norder = "fastest"\n')
    args = ["agent", "serve", "--state-dir", str(tmp_path / "state"), "--shadow-policy", str(bad)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2
    assert str(bad) in out.output and "order" in out.output and "fastest" in out.output
    config = AgentConfig(
        state_dir=tmp_path / "state", allow_root=True, run_jobs_as="agent", shadow_policy=bad
    )
    with pytest.raises(AgentStartError, match=r"shadow policy: .*candidate\.toml.*order"):
        Agent(config)
    missing = AgentConfig(
        state_dir=tmp_path / "state",
        allow_root=True,
        run_jobs_as="agent",
        shadow_policy=tmp_path / "nope.toml",
    )
    with pytest.raises(AgentStartError, match=r"nope\.toml: cannot read"):
        Agent(missing)


def test_without_a_shadow_policy_the_route_says_how_to_get_one(tmp_path: Path) -> None:
    agent = Agent(
        AgentConfig(state_dir=tmp_path / "state", allow_root=True, run_jobs_as="agent", nodes=1)
    )
    agent.start()
    try:
        client = TestClient(agent.app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {agent.admin_token}"
        answer = client.get("/shadow")
        assert answer.status_code == 404
        assert "--shadow-policy" in answer.json()["detail"]
        assert client.get("/shadow", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        agent.stop()
        kill_jobs_of(tmp_path / "state")
