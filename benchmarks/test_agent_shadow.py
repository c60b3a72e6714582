"""Shadow mode's speed: how many decision-log rows per second the twin follows.

A synthetic agent log of 10,000 jobs (16 nodes of 8 cores, three users, the
machine kept busy; ``tests/agent_logs.py`` writes it as the agent would) is
run under ``sjf`` while the log's policy is ``fcfs``:

- from the store: one refresh of ``ShadowRunner`` reads the whole log from
  SQLite (JSON decoding included) and runs the twin to its end, as after an
  agent start with a backlog;
- in steps: the twin fed 500 rows at a time and advanced after each, as the
  background thread does every few seconds on a busy agent.
"""

from __future__ import annotations

import json
from pathlib import Path

from htcsim.agent.shadow.runner import ShadowRunner
from htcsim.agent.shadow.twin import ShadowTwin
from htcsim.agent.store.jobs import AgentStore
from htcsim.model import Machine
from htcsim.policy import Policy
from tests.agent_logs import random_workload, record_agent_log

N_JOBS = 10_000
STEP_ROWS = 500


def _log() -> list[tuple[int, int, str, int | None, dict]]:
    load = random_workload(N_JOBS, Machine(n_nodes=16, cores_per_node=8), seed=1)
    return record_agent_log(load, Policy())


def test_shadow_catch_up_from_the_store(benchmark, tmp_path: Path) -> None:
    rows = _log()
    db = tmp_path / "agent.db"
    store = AgentStore(db)
    store.log_decisions([(t, op, job, json.dumps(data)) for _, t, op, job, data in rows])
    store.close()
    end = rows[-1][1]

    def catch_up() -> ShadowRunner:
        runner = ShadowRunner(db, Policy(order="sjf"), clock=lambda: end + 3600.0)
        runner.refresh()
        return runner

    runner = benchmark.pedantic(catch_up, rounds=3, iterations=1)
    summary = runner.report(0, refresh=False)["summary"]
    assert summary["error"] is None and summary["jobs_compared"] == N_JOBS
    rate = len(rows) / benchmark.stats.stats.min
    benchmark.extra_info["rows_per_second"] = round(rate)
    print(f"\nshadow catch-up from the store: {rate:,.0f} decision-log rows/s ({len(rows):,} rows)")


def test_shadow_refreshes_in_steps(benchmark) -> None:
    rows = _log()

    def follow() -> ShadowTwin:
        twin = ShadowTwin(Policy(order="sjf"))
        for k in range(0, len(rows), STEP_ROWS):
            twin.feed(rows[k : k + STEP_ROWS])
            twin.advance(twin.latest_s)
        return twin

    twin = benchmark.pedantic(follow, rounds=3, iterations=1)
    assert twin.tally.compared > 0.95 * N_JOBS  # the last ones wait for the log to go on
    rate = len(rows) / benchmark.stats.stats.min
    benchmark.extra_info["rows_per_second"] = round(rate)
    print(f"\nshadow refreshes of {STEP_ROWS} rows: {rate:,.0f} decision-log rows/s")
