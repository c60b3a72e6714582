"""What a route handler is handed: the agent's parts, and who is calling.

``create_app`` puts the engine, the token file (``Tokens``), the store's
readers and the shadow runner on ``app.state``; the functions here read
them from the request's app, and the ``Annotated`` aliases are what a
handler names as a parameter's type: ``EngineDep``, ``TokensDep``,
``ReadersDep``, ``ShadowDep``, ``Caller`` (the ``Principal`` of the bearer
token, 401 without a known one) and ``Admin`` (a caller with the admin
role, 403 otherwise).

``Readers`` keeps one read-only store connection per thread; a handler
calls ``readers.get()`` in the thread that reads. ``ask`` awaits the answer
of a command handed to the scheduling loop.

The annotations here and in the routes are evaluated ones (no ``from
__future__ import annotations``): FastAPI reads them to build the
dependencies and the schema.
"""

import asyncio
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from htcsim.agent.api.auth import Tokens
from htcsim.agent.api.errors import ApiError
from htcsim.agent.api.idempotency import Idempotency
from htcsim.agent.engine.loop import Engine
from htcsim.agent.engine.principal import Principal
from htcsim.agent.shadow.runner import ShadowRunner
from htcsim.agent.store.jobs import AgentStore


class Readers:
    """One read connection per thread (SQLite connections are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def get(self) -> AgentStore:
        store: AgentStore | None = getattr(self._local, "store", None)
        if store is None:
            store = AgentStore(self.path, readonly=True)
            self._local.store = store
        return store


bearer = HTTPBearer(auto_error=False)


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_tokens(request: Request) -> Tokens:
    tokens: Tokens = request.app.state.tokens
    return tokens


async def get_readers(request: Request) -> Readers:
    readers: Readers = request.app.state.readers
    return readers


async def get_idempotency(request: Request) -> Idempotency:
    idempotency: Idempotency = request.app.state.idempotency
    return idempotency


async def get_shadow(request: Request) -> ShadowRunner | None:
    shadow: ShadowRunner | None = request.app.state.shadow
    return shadow


EngineDep = Annotated[Engine, Depends(get_engine)]
TokensDep = Annotated[Tokens, Depends(get_tokens)]
ReadersDep = Annotated[Readers, Depends(get_readers)]
IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
ShadowDep = Annotated[ShadowRunner | None, Depends(get_shadow)]


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller's principal. Async on purpose: the lookup is a stat of the token
    file and a hash (microseconds), and a plain ``def`` dependency would cost every
    request a hop to a worker thread and back."""
    if credentials is None:
        raise ApiError(401, "a bearer token is required (Authorization: Bearer TOKEN)")
    tokens: Tokens = request.app.state.tokens
    principal = tokens.lookup(credentials.credentials)
    if principal is None:
        raise ApiError(401, "unknown token")
    return principal


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, f"user {principal.user!r} is not an admin")
    return principal


Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]


async def ask(future: Any) -> Any:
    return await asyncio.wrap_future(future)
