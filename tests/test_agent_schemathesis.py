"""Generated requests against the agent's own OpenAPI schema: none may get a 5xx.

Why: the bad-input table in test_agent_api.py covers the mistakes people make;
schemathesis covers the ones nobody thought of (huge integers, odd Unicode,
missing or extra parts), every route, from the schema the API publishes.
It runs on the ASGI app with the admin token, against a real Agent (engine
thread, store, executor), so a request that would crash the scheduling loop
shows up too: every case is followed by a check that the loop still runs.

No route is excluded. The schema's examples are requests the agent accepts
(jobs, a batch, a workflow, a policy), so submissions reach the scheduling
loop and run as real processes; their "/tmp" directory is replaced by this
test's own, and they are killed when the agent stops.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import create_autospec

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from htcsim.agent.api.app import Tokens, create_app
from htcsim.agent.config import AgentConfig
from htcsim.agent.engine.loop import Engine
from htcsim.agent.server import Agent
from tests.agent_harness import kill_jobs_of

EXAMPLES_PER_OPERATION = 30
"""Bounded so the whole file runs in well under a minute (18 operations)."""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    state_dir: Path = tmp_path_factory.mktemp("schemathesis") / "state"
    config = AgentConfig(
        state_dir=state_dir,
        allow_root=True,
        run_jobs_as="agent",
        nodes=2,
        cores_per_node=2,
        kill_grace_s=1,
        memory_limit="off",
    )
    running = Agent(config)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        kill_jobs_of(state_dir)


def _here(value: Any, directory: str) -> Any:
    """``value`` with every "/tmp" string (the examples' directory) replaced by ``directory``."""
    if value == "/tmp":
        return directory
    if isinstance(value, list):
        return [_here(v, directory) for v in value]
    if isinstance(value, dict):
        return {k: _here(v, directory) for k, v in value.items()}
    return value


def _openapi() -> dict[str, Any]:
    """The schema the agent publishes, read from an app that serves nothing.

    Why not ``from_asgi`` on the agent's app: the schema must exist at import
    time (parametrize), before any fixture; and schemathesis 4.32's
    ``pytest.from_fixture`` fails under pytest 9 (it reads
    ``request.node._nodeid``). ``create_app`` only stores the engine's db
    path and binds its methods when it builds the routes, so a mock engine
    gives the same schema; every request then goes to the real agent's app
    (``app=``).
    """
    stand_in = create_autospec(Engine, instance=True)
    stand_in.config = SimpleNamespace(db_path=Path("unused.db"))
    return create_app(stand_in, Tokens(Path("unused-tokens.toml"))).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: schemathesis.Case, agent: Agent) -> None:
    assert agent.admin_token is not None
    case.body = _here(case.body, str(agent.config.state_dir.parent))
    case.call_and_validate(
        app=agent.app,
        headers={"Authorization": f"Bearer {agent.admin_token}"},
        checks=[not_a_server_error],
    )
    assert agent.engine.alive, "the scheduling loop died on a generated request"
