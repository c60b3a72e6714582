"""The agent's REST API at the unit level: FastAPI's TestClient on a real Agent
(engine thread, store, executor), without a socket.

Why here and not over a socket: every malformed request must get a 4xx that
names the field at fault, and auth must hold on every route; both are
properties of the handlers and schemas, so they are checked row by row on the
ASGI app, fast. The job lifecycle over a real socket is in
test_agent_jobs.py; generated requests in test_agent_schemathesis.py.
"""

from __future__ import annotations

import getpass
import json
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from htcsim.agent.api.app import create_app
from htcsim.agent.api.auth import Tokens, add_token
from htcsim.agent.api.schemas import JobRequest
from htcsim.agent.api.submit_lane import SubmitLane
from htcsim.agent.config import AgentConfig
from htcsim.agent.engine.loop import EngineError
from htcsim.agent.engine.principal import Principal
from htcsim.agent.metrics import METRIC_NAMES
from htcsim.agent.server import Agent
from htcsim.agent.store.jobs import AgentStore, NewJob
from tests.agent_harness import kill_jobs_of, wait_for

ME = getpass.getuser()
"""The admin: the first start of an agent makes a token for the user running it."""


def make_agent(state_dir: Path) -> Agent:
    """Two nodes of two cores: small enough that 9999 cores is more than the cluster."""
    config = AgentConfig(
        state_dir=state_dir,
        allow_root=True,
        run_jobs_as="agent",
        nodes=2,
        cores_per_node=2,
        kill_grace_s=1,
    )
    agent = Agent(config)
    agent.start()
    return agent


def close_agent(agent: Agent) -> None:
    """Stop the loop, then kill job processes (jobs outlive their agent by design)."""
    agent.stop()
    kill_jobs_of(agent.config.state_dir)


def client_of(agent: Agent, token: str | None = None) -> TestClient:
    """A client with a bearer token (the admin's by default); a 500 is a response, not a raise."""
    client = TestClient(agent.app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token or agent.admin_token}"
    return client


def submit(client: TestClient, cwd: Path, **fields: Any) -> int:
    """Submit one job (``command`` defaults to ``true``) and return its id."""
    body = {"command": ["true"], "cwd": str(cwd), **fields}
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["ids"][0])


def wait_state(client: TestClient, job_id: int, *states: str) -> dict[str, Any]:
    """Poll until the job reaches one of ``states``; returns the job."""

    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["state"] in states else None

    result: dict[str, Any] = wait_for(check, timeout=20)
    return result


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A fresh agent for tests that change its state (policy, tokens, counts)."""
    running = make_agent(tmp_path / "state")
    try:
        yield running
    finally:
        close_agent(running)


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One agent for the table of bad requests (they change nothing), with a
    completed job (``{done}`` in a row's path) for the actions on an ended job."""
    root = tmp_path_factory.mktemp("bad-input")
    running = make_agent(root / "state")
    try:
        client = client_of(running)
        done = submit(client, root)
        wait_state(client, done, "completed")
        yield {"agent": running, "client": client, "cwd": root, "done": done}
    finally:
        close_agent(running)


def job(**fields: Any) -> dict[str, Any]:
    """A valid job body (``{cwd}`` is replaced by an existing directory) with ``fields`` over it."""
    return {"command": ["true"], "cwd": "{cwd}", **fields}


def no(key: str) -> dict[str, Any]:
    """A valid job body without ``key``."""
    body = job()
    del body[key]
    return body


WORKFLOW = {"name": "w", "job": [{"name": "a", "command": "true"}]}

# (method, path, JSON body or raw bytes, status, field expected in the Problem, fragment of detail)
BAD_REQUESTS: list[Any] = [
    # ---- POST /jobs
    ("POST", "/jobs", no("command"), 422, "command", "command"),
    ("POST", "/jobs", job(command=[]), 422, "command", "at least 1"),
    ("POST", "/jobs", job(command=[""]), 422, "command", "program"),
    ("POST", "/jobs", job(command="true"), 422, "command", "list"),
    ("POST", "/jobs", job(command=["a\0b"]), 422, "command", "NUL"),
    ("POST", "/jobs", no("cwd"), 422, "cwd", "cwd"),
    ("POST", "/jobs", job(cwd="relative/dir"), 422, "cwd", "absolute"),
    ("POST", "/jobs", job(cwd="/nonexistent/htcsim"), 422, "cwd", "not a directory"),
    ("POST", "/jobs", job(cores=0), 422, "cores", "cores"),
    ("POST", "/jobs", job(cores="two"), 422, "cores", "integer"),
    ("POST", "/jobs", job(cores=9999), 422, "cores", "more than any node of the cluster"),
    ("POST", "/jobs", job(mem_mib=-1), 422, "mem_mib", "mem_mib"),
    pytest.param("POST", "/jobs", job(mem_mib=10**9), 422, "mem_mib", "more than", marks=()),
    pytest.param("POST", "/jobs", job(gpus=1), 422, "gpus", "more than", marks=()),
    ("POST", "/jobs", job(walltime_s=0), 422, "walltime_s", "walltime_s"),
    ("POST", "/jobs", job(walltime_s=1.5), 422, "walltime_s", "integer"),
    ("POST", "/jobs", job(array="5-1"), 422, "array", "empty"),
    ("POST", "/jobs", job(array="1-x"), 422, "array", "N-M"),
    ("POST", "/jobs", job(array="0-100000"), 422, "array", "more than 100000"),
    ("POST", "/jobs", job(array="1,1"), 422, "array", "twice"),
    ("POST", "/jobs", job(array=str(2**64)), 422, "array", "index above"),
    ("POST", "/jobs", job(qos="nope"), 422, "qos", "unknown qos"),
    ("POST", "/jobs", job(qos="bad name!"), 422, "qos", "pattern"),
    ("POST", "/jobs", job(after_ok=[99999]), 422, "after_ok", "no job 99999"),
    ("POST", "/jobs", job(after_not_ok=[99999]), 422, "after_not_ok", "no job 99999"),
    ("POST", "/jobs", job(after_ok=["{done}", "{done}"]), 422, "after_ok", "twice"),
    ("POST", "/jobs", job(after_ok=["{done}"], after_any=["{done}"]), 422, "after_any", "after_ok"),
    ("POST", "/jobs", job(after_ok=[0]), 422, "after_ok.0", "greater than"),
    ("POST", "/jobs", job(after_ok=[2**70]), 422, "after_ok.0", "less than"),
    ("POST", "/jobs", job(bogus=1), 422, "bogus", "Extra inputs"),
    ("POST", "/jobs", job(env={"1X": "v"}), 422, "env.1X.[key]", "env"),
    ("POST", "/jobs", job(env={"A": "x\0y"}), 422, "env", "NUL"),
    ("POST", "/jobs", job(env={"A": 1}), 422, "env.A", "string"),
    ("POST", "/jobs", job(signal="KILL"), 422, "signal", "signal"),
    ("POST", "/jobs", job(signal="NOPE"), 422, "signal", "signal"),
    ("POST", "/jobs", job(signal_before_s=-1), 422, "signal_before_s", "greater"),
    ("POST", "/jobs", job(name="x" * 201), 422, "name", "at most"),
    ("POST", "/jobs", job(stdout="/tmp/a\0b"), 422, "stdout", "NUL"),
    ("POST", "/jobs", job(hold="maybe"), 422, "hold", "boolean"),
    ("POST", "/jobs", b"{not json", 422, "body", "not valid JSON"),
    ("POST", "/jobs", [1, 2], 422, "body", "dictionary"),
    # ---- POST /jobs/batch
    ("POST", "/jobs/batch", {"jobs": []}, 422, "jobs", "at least 1"),
    ("POST", "/jobs/batch", {"jobs": job()}, 422, "jobs", "list"),
    ("POST", "/jobs/batch", {"jobs": [job(), job(cores=0)]}, 422, "jobs.1.cores", "cores"),
    (
        "POST",
        "/jobs/batch",
        {"jobs": [job(), job(cwd="/nonexistent/htcsim")]},
        422,
        "jobs.1.cwd",
        "not a directory",
    ),
    ("POST", "/jobs/batch", {"jobs": [job(), job(cores=99)]}, 422, "cores", "job 1 of the request"),
    ("POST", "/jobs/batch", {"jobs": [job()], "extra": 1}, 422, "extra", "Extra inputs"),
    # ---- GET /jobs and one job
    ("GET", "/jobs?state=bogus", None, 422, "state", "unknown state 'bogus'"),
    ("GET", "/jobs?limit=0", None, 422, "limit", "greater than or equal to 1"),
    ("GET", "/jobs?limit=10001", None, 422, "limit", "less than"),
    ("GET", "/jobs?after=-1", None, 422, "after", "greater than or equal to 0"),
    ("GET", "/jobs?after=x", None, 422, "after", "integer"),
    ("GET", "/jobs?array_id=0", None, 422, "array_id", "greater"),
    ("GET", f"/jobs/{2**70}", None, 422, "job_id", "less than"),
    ("GET", "/jobs/abc", None, 422, "job_id", "integer"),
    ("GET", "/jobs/99999", None, 404, "job_id", "no job 99999"),
    ("GET", "/jobs/99999/history", None, 404, "job_id", "no job 99999"),
    ("GET", "/jobs/99999/log", None, 404, "job_id", "no job 99999"),
    ("GET", "/jobs/{done}/log?stream=stdin", None, 422, "stream", "pattern"),
    ("GET", "/jobs/{done}/log?tail=-1", None, 422, "tail", "greater"),
    # ---- POST /workflows
    (
        "POST",
        "/workflows",
        {
            "workflow": {
                "name": "w",
                "job": [
                    {"name": "a", "command": "true", "after_ok": ["b"]},
                    {"name": "b", "command": "true", "after_ok": ["a"]},
                ],
            },
            "base_dir": "{cwd}",
        },
        422,
        "workflow",
        "cycle: a -> b -> a",
    ),
    (
        "POST",
        "/workflows",
        {
            "workflow": {"name": "w", "job": [{"name": "a", "command": "x", "after_ok": ["z"]}]},
            "base_dir": "{cwd}",
        },
        422,
        "workflow",
        "after_ok: names unknown job 'z'",
    ),
    (
        "POST",
        "/workflows",
        {
            "workflow": {"name": "w", "job": [{"name": "a", "command": "x", "mem": "lots"}]},
            "base_dir": "{cwd}",
        },
        422,
        "workflow",
        "mem: cannot read 'lots'",
    ),
    (
        "POST",
        "/workflows",
        {
            "workflow": {"name": "w", "job": [{"name": "a", "command": "x", "cores": 2**70}]},
            "base_dir": "{cwd}",
        },
        422,
        "workflow",
        "cores: must be 1..",
    ),
    (
        "POST",
        "/workflows",
        {
            "workflow": {"name": "w", "job": [{"name": "a", "command": "x", "cores": 99}]},
            "base_dir": "{cwd}",
        },
        422,
        "cores",
        "more than",
    ),
    ("POST", "/workflows", {"workflow": {"job": []}, "base_dir": "{cwd}"}, 422, "workflow", "name"),
    ("POST", "/workflows", {"workflow": WORKFLOW, "base_dir": "rel"}, 422, "base_dir", "absolute"),
    ("POST", "/workflows", {"workflow": WORKFLOW}, 422, "base_dir", "Field required"),
    ("GET", "/workflows/nope", None, 404, "name", "no workflow 'nope'"),
    ("GET", "/workflows/nope?limit=0", None, 422, "limit", "greater than or equal to 1"),
    ("GET", "/workflows/nope?limit=10001", None, 422, "limit", "less than or equal to 10000"),
    ("GET", "/jobs?limit=10001", None, 422, "limit", "less than or equal to 10000"),
    ("GET", "/jobs?fields=id,nope", None, 422, "fields", "unknown field 'nope' (known: id, name"),
    # ---- PUT /policy
    ("PUT", "/policy", {"toml": "[queue"}, 422, "toml", "not valid TOML"),
    ("PUT", "/policy", {"toml": "[queue]\nfoo = 1"}, 422, "toml", "unknown key queue.foo"),
    ("PUT", "/policy", {"toml": "[nope]"}, 422, "toml", "unknown section [nope]"),
    ("PUT", "/policy", {"toml": "[backfill]\ndepth = -1"}, 422, "backfill_depth", "backfill.depth"),
    ("PUT", "/policy", {"toml": '[queue]\norder = "lifo"'}, 422, "order", "queue.order"),
    ("PUT", "/policy", {"toml": "[limits]\ncores_per_user = 1.5"}, 422, None, "cores_per_user"),
    ("PUT", "/policy", {}, 422, "toml", "Field required"),
    ("PUT", "/policy", {"toml": "", "note": 5}, 422, "note", "string"),
    # ---- actions on unknown or ended jobs
    ("POST", "/jobs/99999/hold", None, 404, "job_id", "no job 99999"),
    ("POST", "/jobs/99999/release", None, 404, "job_id", "no job 99999"),
    ("POST", "/jobs/99999/cancel", None, 404, "job_id", "no job 99999"),
    ("DELETE", "/jobs/99999", None, 404, "job_id", "no job 99999"),
    ("POST", "/jobs/{done}/cancel", None, 409, None, "already ended (completed)"),
    ("DELETE", "/jobs/{done}", None, 409, None, "already ended"),
    ("POST", "/jobs/{done}/hold", None, 409, None, "only a pending job can be held"),
    ("POST", "/jobs/{done}/release", None, 409, None, "is not held (completed)"),
    # ---- nodes
    ("POST", "/nodes/nope/drain", None, 404, "node", "no node 'nope' (nodes: node0, node1)"),
    ("POST", "/nodes/nope/resume", None, 404, "node", "no node 'nope'"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    """Replace ``{cwd}`` and ``{done}`` placeholders in a row (ints stay ints in lists)."""
    if isinstance(value, str):
        if value in ("{done}",):
            return int(names["done"])
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("method", "path", "body", "status", "field", "fragment"), BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_naming_the_field(
    shared: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    status: int,
    field: str | None,
    fragment: str,
) -> None:
    names = {"cwd": str(shared["cwd"]), "done": str(shared["done"])}
    client: TestClient = shared["client"]
    path = _fill(path, names)
    if isinstance(body, bytes):
        response = client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
    elif body is None:
        response = client.request(method, path)
    else:
        response = client.request(method, path, json=_fill(body, names))
    assert response.status_code == status, response.text
    problem = response.json()
    assert set(problem) == {"detail", "field"}
    assert fragment in problem["detail"], problem
    if field is not None:
        assert problem["field"] == field, problem
    # the loop survived the request and still accepts work
    assert shared["agent"].engine.alive


def test_a_refused_batch_leaves_no_job(shared: dict[str, Any]) -> None:
    """All or none: the first job of a refused batch is not accepted either."""
    client: TestClient = shared["client"]
    before = client.get("/cluster").json()["jobs"]
    response = client.post(
        "/jobs/batch",
        json={"jobs": [job(cwd=str(shared["cwd"])), job(cwd=str(shared["cwd"]), cores=99)]},
    )
    assert response.status_code == 422
    assert client.get("/cluster").json()["jobs"] == before


def test_a_duplicate_workflow_name_is_refused_with_its_name(shared: dict[str, Any]) -> None:
    client: TestClient = shared["client"]
    body = {"workflow": {**WORKFLOW, "name": "twice"}, "base_dir": str(shared["cwd"])}
    assert client.post("/workflows", json=body).status_code == 201
    response = client.post("/workflows", json=body)
    assert response.status_code == 422
    assert "workflow 'twice' already exists" in response.json()["detail"]


def test_a_duplicate_workflow_message_is_intact(shared: dict[str, Any]) -> None:
    client: TestClient = shared["client"]
    body = {"workflow": {**WORKFLOW, "name": "twice-b"}, "base_dir": str(shared["cwd"])}
    assert client.post("/workflows", json=body).status_code == 201
    response = client.post("/workflows", json=body)
    assert response.status_code in (409, 422)
    assert response.json()["detail"].endswith(f"for user {ME!r}"), response.json()


# ------------------------------------------------------------------ the submit lane


def _lane(app: Any) -> SubmitLane:
    """The app's ``SubmitLane`` (its middleware stack is built by the first request)."""
    layer = app.middleware_stack
    while not isinstance(layer, SubmitLane):
        layer = layer.app
    return layer


def test_the_submit_lane_answers_as_the_route(agent: Agent, tmp_path: Path) -> None:
    """Plain ``POST /jobs`` requests take ``SubmitLane``; an app without it answers
    every one with the route. The same requests (every bad ``POST /jobs`` row of
    the table above, good ones, keyed ones, bad tokens and headers) get the same
    status, headers and body from both (the new ids aside), and the lane answered
    the ones it should rather than handing them on."""
    route_app = create_app(agent.engine, Tokens(agent.config.tokens_path), submit_lane=False)
    clients = {  # no default headers: each request says its own
        name: TestClient(app, raise_server_exceptions=False)
        for name, app in (("lane", agent.app), ("route", route_app))
    }
    assert clients["lane"].get("/healthz").status_code == 200  # builds the middleware stack
    done = submit(client_of(agent), tmp_path)
    wait_state(client_of(agent), done, "completed")
    names = {"cwd": str(tmp_path), "done": str(done)}
    token = {"Authorization": f"Bearer {agent.admin_token}"}
    plain = {**token, "Content-Type": "application/json"}
    good = [
        job(hold=True),
        job(hold=True, array="1-3", name="arr", env={"A": "1"}, cores=2, walltime_s=5),
        job(after_ok=["{done}"], hold=True, stdout="out-{id}.txt"),
    ]
    sent: list[tuple[Any, dict[str, str], bool]] = [  # (body, headers, lane answers it)
        # the lane answers the bodies the route's model accepts, hands on the others
        *[(b, plain, _accepted(b)) for b in (_fill(r.values[2], names) for r in _post_jobs_rows())],
        *[(_fill(body, names), plain, True) for body in good],
        # refused by the engine or the path checks: the lane words it as the route does
        (_fill(job(cores=9999), names), plain, True),
        (_fill(job(qos="nope"), names), plain, True),
        (job(cwd="/nonexistent/htcsim"), plain, True),
        (job(cwd=str(agent.config.state_dir)), plain, True),
        (_fill(job(), names), {**plain, "Idempotency-Key": "k1"}, True),
        (_fill(job(), names), {**plain, "Idempotency-Key": "k1"}, True),  # the first's answer
        (_fill(job(cores=2), names), {**plain, "Idempotency-Key": "k1"}, True),  # 409
        (_fill(job(), names), {**plain, "Idempotency-Key": " "}, True),
        (_fill(job(), names), {**plain, "Idempotency-Key": "k" * 256}, False),
        (_fill(job(), names), {"Content-Type": "application/json"}, False),
        (_fill(job(), names), {**plain, "Authorization": "Bearer " + "x" * 43}, False),
        (_fill(job(), names), {**plain, "Authorization": "Basic dXNlcjpwYXNz"}, False),
        (_fill(job(), names), {**token, "Content-Type": "text/plain"}, False),
        (_fill(job(), names), {**token, "Content-Type": "application/json; charset=utf-8"}, True),
        (_fill(job(), names), {**token, "Content-Type": "application/merge-patch+json"}, False),
    ]
    for body, headers, taken in sent:
        answers = {}
        for name, client in clients.items():
            # a key is the caller's across apps (one store): each app gets its own
            keyed = {
                k: v + name if k == "Idempotency-Key" and v.strip() else v
                for k, v in headers.items()
            }
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            before = _lane(agent.app).answered if name == "lane" else 0
            response = client.post("/jobs", content=content, headers=keyed)
            if name == "lane":
                assert _lane(agent.app).answered - before == taken, (body, headers)
            answers[name] = response
        lane, route = answers["lane"], answers["route"]
        assert lane.status_code == route.status_code, (body, lane.text, route.text)
        assert lane.headers.keys() == route.headers.keys()
        assert lane.headers["content-type"] == route.headers["content-type"]
        assert _shape(lane) == _shape(route), (body, lane.text, route.text)


def _post_jobs_rows() -> list[Any]:
    """The rows of ``BAD_REQUESTS`` that post a job."""
    rows = [r if hasattr(r, "values") else pytest.param(*r) for r in BAD_REQUESTS]
    return [r for r in rows if r.values[:2] == ("POST", "/jobs")]


def _accepted(body: Any) -> bool:
    """Whether the route's model accepts a body."""
    try:
        JobRequest.model_validate(json.loads(body) if isinstance(body, bytes) else body)
    except ValueError:
        return False
    return True


def _shape(response: Any) -> Any:
    """An answer's body, the ids of new jobs as their count (they differ between apps)."""
    body = response.json()
    if response.status_code == 201:
        return {"ids": len(body["ids"]), "array_id": body["array_id"] == body["ids"][0]}
    return body


# ------------------------------------------------------------------ auth


def _routes(agent: Agent) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI schema, path parameters filled."""
    fill = {"{job_id}": "1", "{name}": "node0"}
    out = []
    for path, operations in agent.app.openapi()["paths"].items():
        for name, value in fill.items():
            path = path.replace(name, value)
        out += [(method.upper(), path) for method in operations]
    return out


def test_every_route_but_healthz_needs_a_valid_token(agent: Agent) -> None:
    routes = _routes(agent)
    assert len(routes) >= 18  # the schema lists them all (a route hidden from it is untested)
    anonymous = TestClient(agent.app, raise_server_exceptions=False)
    wrong = client_of(agent, "x" * 43)
    for method, path in routes:
        for client in (anonymous, wrong):
            response = client.request(method, path)
            if path == "/healthz":
                assert response.status_code == 200
                continue
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    malformed = anonymous.get("/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert malformed.status_code == 401


def test_a_user_sees_and_acts_on_own_jobs_only(agent: Agent, tmp_path: Path) -> None:
    admin = client_of(agent)
    bob = client_of(agent, add_token(agent.config.tokens_path, "bob"))
    theirs = submit(admin, tmp_path, command=["sleep", "30"], hold=True)
    mine = submit(bob, tmp_path, command=["sleep", "30"], hold=True)

    for method, path in (
        ("GET", f"/jobs/{theirs}"),
        ("GET", f"/jobs/{theirs}/history"),
        ("GET", f"/jobs/{theirs}/log"),
        ("POST", f"/jobs/{theirs}/cancel"),
        ("DELETE", f"/jobs/{theirs}"),
        ("POST", f"/jobs/{theirs}/hold"),
        ("POST", f"/jobs/{theirs}/release"),
    ):
        response = bob.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"no job {theirs}"  # not even that it exists
    listed = bob.get("/jobs", params={"user": ME})
    assert listed.status_code == 403 and listed.json()["field"] == "user"
    assert [j["id"] for j in bob.get("/jobs").json()["jobs"]] == [mine]
    assert [j["id"] for j in bob.get("/jobs", params={"user": "bob"}).json()["jobs"]] == [mine]
    for method, path, body in (
        ("POST", "/nodes/node0/drain", None),
        ("POST", "/nodes/node0/resume", None),
        ("PUT", "/policy", {"toml": '[queue]\norder = "sjf"'}),
    ):
        response = bob.request(method, path, json=body)
        assert response.status_code == 403, (path, response.text)
        assert "'bob' is not an admin" in response.json()["detail"]
    assert admin.get("/policy").json()["policy"]["order"] == "fcfs"

    assert bob.get(f"/jobs/{mine}").json()["user"] == "bob"
    assert bob.post(f"/jobs/{mine}/release").json() == {"ids": [mine]}
    assert bob.post(f"/jobs/{mine}/cancel").json() == {"ids": [mine]}
    wait_state(bob, mine, "cancelled")
    assert admin.get(f"/jobs/{theirs}").json()["state"] == "held"  # untouched
    # the admin sees everyone's jobs
    assert {j["id"] for j in admin.get("/jobs").json()["jobs"]} == {theirs, mine}
    assert [j["id"] for j in admin.get("/jobs", params={"user": "bob"}).json()["jobs"]] == [mine]


# ------------------------------------------------------------------ policy


def test_put_policy_is_applied_and_audited(agent: Agent) -> None:
    client = client_of(agent)
    current = client.get("/policy").json()
    assert tomllib.loads(current["toml"])["queue"]["order"] == "fcfs"
    assert current["policy"]["order"] == "fcfs"

    text = '[queue]\norder = "sjf"\n\n[limits]\nrunning_jobs_per_user = 3\n'
    response = client.put("/policy", json={"toml": text, "note": "shortest first"})
    assert response.status_code == 200, response.text
    audit_id = response.json()["audit_id"]

    shown = client.get("/policy").json()
    parsed = tomllib.loads(shown["toml"])
    assert parsed["queue"]["order"] == "sjf"
    assert parsed["limits"]["running_jobs_per_user"] == 3
    assert shown["policy"]["max_running_jobs_per_user"] == 3
    assert client.get("/cluster").json()["policy"] == agent.engine.policy.label

    audits = AgentStore(agent.config.db_path, readonly=True).policy_audits()
    last = audits[-1]
    assert last["id"] == audit_id
    assert last["note"] == "shortest first"
    assert tomllib.loads(last["policy"])["queue"]["order"] == "sjf"
    assert audits[0]["note"] == "agent start"  # the policy in force before is audited too

    refused = client.put("/policy", json={"toml": '[queue]\norder = "lifo"'})
    assert refused.status_code == 422
    assert client.get("/policy").json()["policy"]["order"] == "sjf"  # unchanged
    assert len(AgentStore(agent.config.db_path, readonly=True).policy_audits()) == len(audits)


# ------------------------------------------------------------------ metrics


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    matches = [v for got, v in samples[name] if all(got.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def test_metrics_export_every_name_with_sane_values(agent: Agent, tmp_path: Path) -> None:
    client = client_of(agent)
    ok = submit(client, tmp_path)
    bad = submit(client, tmp_path, command=["false"])
    held = submit(client, tmp_path, hold=True)
    wait_state(client, ok, "completed")
    wait_state(client, bad, "failed")
    assert client.post(f"/jobs/{held}/cancel").status_code == 200
    wait_state(client, held, "cancelled")
    pending = submit(client, tmp_path, hold=True)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    dask_only = {"htcsim_dask_scheduler_up"}  # one series per Dask scheduler (that test's)
    for name in set(METRIC_NAMES) - dask_only:
        assert name in samples or f"{name}_bucket" in samples, name
    assert "htcsim_dask_scheduler_up" not in samples  # no scheduler: no series

    assert _value(samples, "htcsim_jobs", state="completed") == 1
    assert _value(samples, "htcsim_jobs", state="failed") == 1
    assert _value(samples, "htcsim_jobs", state="cancelled") == 1
    assert _value(samples, "htcsim_jobs", state="held") == 1
    assert _value(samples, "htcsim_jobs", state="running") == 0
    assert _value(samples, "htcsim_jobs_submitted_total") == 4
    assert _value(samples, "htcsim_jobs_started_total") == 2
    assert _value(samples, "htcsim_jobs_finished_total", state="completed") == 1
    assert _value(samples, "htcsim_jobs_finished_total", state="failed") == 1
    assert _value(samples, "htcsim_jobs_finished_total", state="cancelled") == 1
    assert _value(samples, "htcsim_job_wait_seconds_count") == 2
    # the two started jobs' waits, as the store recorded their submit and start
    ran = AgentStore(agent.config.db_path, readonly=True).jobs_by_id([ok, bad])
    waits = [max(float(j["start_time"]) - float(j["submit_time"]), 0.0) for j in ran.values()]
    assert _value(samples, "htcsim_job_wait_seconds_sum") == pytest.approx(sum(waits), abs=1e-6)
    assert _value(samples, "htcsim_scheduling_pass_seconds_count") >= 1
    assert _value(samples, "htcsim_nodes", state="idle") == 2
    assert sum(v for _, v in samples["htcsim_nodes"]) == 2
    assert _value(samples, "htcsim_cores", use="total") == 4
    assert _value(samples, "htcsim_cores", use="allocated") == 0
    assert _value(samples, "htcsim_utilization") == 0
    assert {labels["node"] for labels, _ in samples["htcsim_node_cpu_ratio"]} == {
        "node0",
        "node1",
    }
    assert all(0 <= v <= 1 for _, v in samples["htcsim_node_cpu_ratio"])
    # bytes, not MiB: any machine running these tests uses more than 1 MiB
    assert all(v > 2**20 for _, v in samples["htcsim_node_memory_used_bytes"])
    # the CPU time each ended job's exit reported, as the store keeps it per job
    cpu = [float(j["cpu_time_s"]) for j in ran.values()]
    assert all(seconds >= 0 for seconds in cpu) and len(cpu) == 2
    assert _value(samples, "htcsim_job_cpu_seconds_total", user=ME) == pytest.approx(
        sum(cpu), abs=1e-6
    )
    assert _value(samples, "htcsim_job_max_rss_bytes_count") == 2
    assert client.post(f"/jobs/{pending}/cancel").status_code == 200


def test_metrics_count_a_running_job(agent: Agent, tmp_path: Path) -> None:
    """While a one-core job runs: one core allocated of four, its node mixed."""
    client = client_of(agent)
    job_id = submit(client, tmp_path, command=["sleep", "30"])
    wait_state(client, job_id, "running")
    samples = _samples(client.get("/metrics").text)
    assert _value(samples, "htcsim_jobs", state="running") == 1
    assert _value(samples, "htcsim_cores", use="allocated") == 1
    assert _value(samples, "htcsim_utilization") == pytest.approx(0.25)
    assert _value(samples, "htcsim_nodes", state="mixed") == 1
    assert _value(samples, "htcsim_nodes", state="idle") == 1
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    wait_state(client, job_id, "cancelled")


def test_healthz_answers_without_a_token_and_503_once_stopped(tmp_path: Path) -> None:
    running = make_agent(tmp_path / "state")
    anonymous = TestClient(running.app, raise_server_exceptions=False)
    try:
        body = anonymous.get("/healthz").json()
        assert body["status"] == "ok" and body["passes"] >= 0
    finally:
        close_agent(running)
    response = anonymous.get("/healthz")
    assert response.status_code == 503
    assert json.loads(response.text)["detail"] == "the scheduling loop is not running"


# ------------------------------------------------------------------ the loop survives


def test_an_unexpected_error_fails_only_its_command(agent: Agent, tmp_path: Path) -> None:
    """The API refuses such numbers (schemas bound them), so this goes to the engine
    directly, as any future caller of Engine.submit could."""
    huge = NewJob(user=ME, command=["true"], cwd=str(tmp_path), cores=1, walltime_s=60)
    future = agent.engine.submit(Principal(ME, "admin"), [replace(huge, mem_mib=2**70)])
    try:
        with pytest.raises(EngineError):
            future.result(timeout=5)
    finally:
        assert agent.engine.alive, "the scheduling loop died"
