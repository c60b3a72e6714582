"""``SubmitLane``: ``POST /jobs`` answered without FastAPI's per-request machinery.

Why: submitting one job is the request a cluster's users send most, often
from scripts in loops and in parallel, and on the agent's own CPU the
framework's work per request (routing, solving the dependencies, reading
the body into a model and the answer back out) cost several times what
parsing, checking and storing the job do. The lane does only the latter:
the request's bearer token is looked up as ``deps.caller`` does, its body
parsed (``json.loads``, as Starlette) and checked by the route's own model
(``JobRequest``), and the route's own body (``routes.jobs.submit_job``)
accepts it; the answer is the route's (``JobIds``, 201, the same JSON).

The lane takes only requests it can answer exactly as the route would, and
hands every other one to the app unchanged, body included: a body that is
not a JSON object the model accepts, a missing or unknown token, a
media type other than ``application/json``, a repeated or over-long
header. So every refusal the API documents (401, 422 naming the field, the
engine's 409 and 429) still comes from the handlers that word it, and the
route, which stays in the OpenAPI schema, remains the reference:
``tests/test_agent_api.py`` sends the same requests to an app with and
without the lane and compares the answers.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from htcsim.agent.api.auth import Tokens
from htcsim.agent.api.errors import ApiError, api_error, engine_error
from htcsim.agent.api.guards import SafeJSONResponse
from htcsim.agent.api.routes.jobs import submit_job
from htcsim.agent.api.schemas import JobRequest
from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.state import EngineError

KEY_MAX = 255
"""The Idempotency-Key header's longest value (``idempotency.IdempotencyKey``)."""
_WANTED = {b"authorization", b"content-type", b"idempotency-key"}


class SubmitLane:
    """ASGI middleware: plain ``POST /jobs`` requests go the short way (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.answered = 0  # requests the lane answered itself (the others went to the app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/jobs":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if headers is None:
            await self.app(scope, receive, send)
            return
        first = await receive()
        replay = _replay(first, receive)
        whole = first["type"] == "http.request" and not first.get("more_body", False)
        parsed = (
            _parse(scope["app"].state.tokens, headers, first.get("body", b"")) if whole else None
        )
        if parsed is None:
            await self.app(scope, replay, send)
            return
        principal, request = parsed
        self.answered += 1
        state = scope["app"].state
        key = (
            headers[b"idempotency-key"].decode("latin-1") if b"idempotency-key" in headers else None
        )
        try:
            answer = await submit_job(
                state.engine, state.readers, state.idempotency, principal, request, key
            )
        except ApiError as exc:
            await (await api_error(Request(scope), exc))(scope, replay, send)
            return
        except EngineError as exc:
            await (await engine_error(Request(scope), exc))(scope, replay, send)
            return
        response = SafeJSONResponse(answer.model_dump(mode="json"), status_code=201)
        await response(scope, replay, send)


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers the lane reads, or None when one is repeated, when the body is
    not declared ``application/json`` or the key is longer than the route takes."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            if name in found:
                return None
            found[name] = value
    media_type = found.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if media_type != b"application/json":  # its parameters (charset) change nothing
        return None
    key = found.get(b"idempotency-key")
    if key is not None and len(key) > KEY_MAX:
        return None
    return found


def _parse(
    tokens: Tokens, headers: dict[bytes, bytes], body: bytes
) -> tuple[Principal, JobRequest] | None:
    """(principal, request), or None for anything the route must answer itself."""
    scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return None
    principal = tokens.lookup(credentials)
    if principal is None:
        return None
    try:
        return principal, JobRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # not JSON, or a request the route refuses
        return None


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that gives the message the lane read, then the rest as it comes
    (the lane reads one: ``BodyLimit``, outside it, hands a whole body over in one)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay
