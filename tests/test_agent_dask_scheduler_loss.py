"""The agent on Dask when the scheduler, or every worker at once, is lost:
real scheduler and worker processes on 127.0.0.1, real kills.

A killed scheduler takes its workers with it (Dask workers do not outlive
it); here, as under systemd's ``Restart=always`` or a Deployment, each worker
is started again when it exits and waits for a scheduler. The agent must
notice at once, say so on /healthz, keep taking submissions, requeue the
running jobs only once they are fenced, reconnect when the scheduler is back,
and run every job exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from htcsim.agent.engine.replay_log import replay_decision_log
from htcsim.agent.store.jobs import AgentStore
from tests.agent_harness import JOB_S, READY_S, AgentProcess, running_agent, slack, wait_for
from tests.dask_harness import DaskSite, GroupSampler

HEARTBEAT_S = 3.0
LEASE_S = 2.0
CORES = 9  # the site's workers: 4 + 2 + 1 + 2


@pytest.fixture
def work(tmp_path: Path) -> Path:
    out = tmp_path / "work"
    out.mkdir()
    return out


def _submit(client: httpx.Client, work: Path, n: int, seconds: float, **extra: object) -> list[int]:
    """``n`` jobs that each append their id to ``done`` once they ran to the
    end (a job killed in its sleep never writes)."""
    command = f"sleep {seconds} && echo $HTCSIM_JOB_ID >> {work / 'done'}"
    ids = []
    for _ in range(n):
        answer = client.post(
            "/jobs", json={"command": ["sh", "-c", command], "cwd": str(work), **extra}
        )
        assert answer.status_code == 201, answer.text
        ids.append(int(answer.json()["ids"][0]))
    return ids


def _jobs(client: httpx.Client) -> dict[int, dict[str, object]]:
    rows = client.get("/jobs", params={"limit": 1000}).json()["jobs"]
    return {int(row["id"]): row for row in rows}


def _states(client: httpx.Client) -> list[str]:
    return [str(row["state"]) for row in _jobs(client).values()]


def _node_states(client: httpx.Client) -> dict[str, str]:
    return {n["name"]: n["state"] for n in client.get("/nodes").json()["nodes"]}


def _health(client: httpx.Client) -> dict[str, object]:
    return dict(client.get("/healthz").json())


def _metric(client: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


def _done(work: Path) -> list[int]:
    path = work / "done"
    return sorted(int(line) for line in path.read_text().split()) if path.exists() else []


@contextmanager
def _busy_agent(
    site: DaskSite, tmp_path: Path, work: Path, n: int = CORES, seconds: float = 8
) -> Iterator[tuple[AgentProcess, httpx.Client, list[int]]]:
    """An agent on ``site`` with a short heartbeat timeout and lease (fenced
    fast), ``n`` jobs of ``seconds`` submitted and every core of the site
    running one: the agent, its API client and the jobs."""
    with (
        running_agent(
            tmp_path,
            backend="dask",
            **site.agent_settings(),
            heartbeat_timeout_s=HEARTBEAT_S,
            lease_s=LEASE_S,
        ) as agent,
        agent.client() as client,
    ):
        wait_for(lambda: len(_node_states(client)) == 4, timeout=READY_S)
        jobs = _submit(client, work, n, seconds)
        wait_for(lambda: _states(client).count("running") == CORES, timeout=JOB_S)
        yield agent, client, jobs


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DaskSite]:
    site = DaskSite(tmp_path, supervised=True)
    try:
        yield site
    finally:
        site.stop()


def test_a_killed_scheduler_loses_every_node_and_every_job_runs_once(
    site: DaskSite, tmp_path: Path, work: Path
) -> None:
    """kill -9 of the scheduler mid-run (its workers exit with it and are
    started again): degraded at once, with the reason; submissions taken;
    every node down and the running jobs requeued once fenced, never before;
    the scheduler restarted on its port, the agent reconnects, the nodes come
    back, every job completes exactly once, never in two places at once."""
    sampler = GroupSampler(work)
    try:
        with _busy_agent(site, tmp_path, work, CORES + 3, 6) as (agent, client, first):
            assert _metric(client, "htcsim_dask_scheduler_up") == 1.0

            site.kill_scheduler()
            killed_at = time.monotonic()
            wait_for(lambda: _health(client)["status"] == "degraded", timeout=READY_S)
            noticed_s = time.monotonic() - killed_at
            assert noticed_s < HEARTBEAT_S + 2.0 * slack(), noticed_s
            reasons = " ".join(map(str, _health(client)["reasons"]))
            assert "Dask scheduler" in reasons and "unreachable" in reasons, reasons
            assert _metric(client, "htcsim_dask_scheduler_up") == 0.0
            assert _metric(client, "htcsim_dask_scheduler_losses_total") == 1.0

            # taken while the scheduler is gone: a 4-core job too (big-0's shape)
            later = _submit(client, work, 2, 1) + _submit(client, work, 1, 1, cores=4)

            # every node down once its jobs are fenced; the jobs requeued, not failed
            wait_for(lambda: set(_node_states(client).values()) == {"down"}, timeout=READY_S)
            states = _states(client)
            assert "running" not in states and "node_fail" not in states, states
            assert all(int(_jobs(client)[j]["requeues"]) <= 1 for j in first)

            site.scheduler = site.start_scheduler()
            wait_for(lambda: _health(client)["status"] == "ok", timeout=READY_S)
            wait_for(
                lambda: (
                    set(_node_states(client).values()) <= {"idle", "mixed", "allocated"}
                    and len(_node_states(client)) == 4
                ),
                timeout=READY_S,
            )
            everyone = first + later
            wait_for(
                lambda: all(_jobs(client)[j]["state"] == "completed" for j in everyone),
                timeout=3 * JOB_S,
            )
            assert _metric(client, "htcsim_dask_scheduler_up") == 1.0
            assert _done(work) == sorted(everyone)  # once each: no late second run
            store = AgentStore(agent.state_dir / "agent.db", readonly=True)
            result = replay_decision_log(store.decisions())
            assert result.differences == [], result.differences[:5]  # the down nodes too
    finally:
        sampler.stop()
    twice = {job: groups for job, groups in sampler.most.items() if len(groups) > 1}
    assert not twice, f"jobs with two live process groups at once: {twice}"


def test_every_worker_lost_at_once_keeps_the_nodes_down_and_the_jobs(
    tmp_path: Path, work: Path
) -> None:
    """SIGKILL of every worker at once, the scheduler up: the nodes are down
    (not ignored until a worker joins, not vanished), the jobs requeued once
    fenced, /healthz degraded, a job of the largest node's shape still
    taken; workers started again run everything exactly once."""
    site = DaskSite(tmp_path)
    try:
        with _busy_agent(site, tmp_path, work) as (_, client, first):
            for process in site.workers.values():
                process.send_signal(signal.SIGKILL)
            wait_for(lambda: set(_node_states(client).values()) == {"down"}, timeout=READY_S)
            assert len(_node_states(client)) == 4
            states = _states(client)
            assert states == ["pending"] * CORES, states
            health = _health(client)
            assert health["status"] == "degraded"
            assert "no Dask worker" in " ".join(map(str, health["reasons"]))
            big = _submit(client, work, 1, 1, cores=4)
            assert _jobs(client)[big[0]]["state"] == "pending"

            for name in site.declared:
                site.workers[name] = site.start_worker(name)
            wait_for(lambda: _health(client)["status"] == "ok", timeout=READY_S)
            everyone = first + big
            wait_for(
                lambda: all(_jobs(client)[j]["state"] == "completed" for j in everyone),
                timeout=3 * JOB_S,
            )
            assert _done(work) == sorted(everyone)  # once each
            assert all(int(_jobs(client)[j]["requeues"]) == 1 for j in first)
    finally:
        site.stop()


def test_a_hung_scheduler_is_lost_and_found_again(
    site: DaskSite, tmp_path: Path, work: Path
) -> None:
    """SIGSTOP of the scheduler (its connections stay open, nothing answers):
    lost within the heartbeat timeout, every node down once fenced, the jobs
    requeued; SIGCONT: the agent reaches it again and every job completes
    exactly once, never in two places at once."""
    sampler = GroupSampler(work)
    try:
        with _busy_agent(site, tmp_path, work) as (_, client, jobs):
            site.scheduler.send_signal(signal.SIGSTOP)
            try:
                stopped_at = time.monotonic()
                wait_for(lambda: _health(client)["status"] == "degraded", timeout=READY_S)
                assert time.monotonic() - stopped_at >= HEARTBEAT_S - 0.5  # not before
                reasons = " ".join(map(str, _health(client)["reasons"]))
                assert "no answer" in reasons, reasons
                wait_for(lambda: set(_node_states(client).values()) == {"down"}, timeout=READY_S)
                assert "running" not in _states(client)
            finally:
                site.scheduler.send_signal(signal.SIGCONT)
            wait_for(lambda: _health(client)["status"] == "ok", timeout=READY_S)
            wait_for(
                lambda: all(_jobs(client)[j]["state"] == "completed" for j in jobs),
                timeout=3 * JOB_S,
            )
            assert _done(work) == sorted(jobs)
    finally:
        sampler.stop()
    twice = {job: groups for job, groups in sampler.most.items() if len(groups) > 1}
    assert not twice, f"jobs with two live process groups at once: {twice}"
