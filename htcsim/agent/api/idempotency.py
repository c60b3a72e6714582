"""``Idempotency-Key``: a retried submission returns the first one's jobs.

Why: a client whose ``POST /jobs`` timed out cannot know whether the jobs
exist; retrying with the same key is then safe. The key is the caller's
(two users may use the same key), kept ``idempotency_ttl_s`` (24 h by
default) in the store's ``idempotency`` table, so it holds across a restart
of the agent. The same key with a different request (another body or
route) is a 409. Keyed submissions go one at a time (one lock), so two
concurrent retries cannot both create jobs.

The answer is recorded once the jobs are durable, by a connection of the
API's own (the scheduling loop stays the writer of the jobs): a crash
between the two leaves the jobs without the key, so a retry after such a
crash submits again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.errors import ApiError
from htcsim.agent.config import AgentConfig
from htcsim.agent.engine.principal import Principal
from htcsim.agent.store.jobs import AgentStore

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="a retry with the same key returns the first request's jobs, creating none",
    ),
]


class Idempotency:
    """The remembered answers of keyed submissions (one per agent)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._lock = asyncio.Lock()
        self._store: AgentStore | None = None
        self._open = threading.Lock()

    def _db(self) -> AgentStore:
        with self._open:
            if self._store is None:
                self._store = AgentStore(self.config.db_path)
            return self._store

    async def run(
        self,
        principal: Principal,
        key: str | None,
        route: str,
        body: Any,
        submit: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """``submit()``'s answer, or the one recorded for ``key`` by an earlier request."""
        if key is None:
            return await submit()
        if not key.strip():
            raise ApiError(422, "Idempotency-Key: must not be empty", "Idempotency-Key")
        text = json.dumps([route, body], sort_keys=True, ensure_ascii=True)
        digest = hashlib.sha256(text.encode()).hexdigest()
        async with self._lock:
            now = time.time()
            since = now - self.config.idempotency_ttl_s
            store = await run_in_threadpool(self._db)
            found = await run_in_threadpool(store.idempotent_answer, principal.user, key, since)
            if found is not None:
                request, answer = found
                if request != digest:
                    raise ApiError(
                        409,
                        "Idempotency-Key: already used for a different request",
                        "Idempotency-Key",
                    )
                return dict(answer)
            answer = await submit()
            await run_in_threadpool(
                lambda: store.remember_idempotent(
                    principal.user, key, digest, answer, now=time.time(), before=since
                )
            )
            return answer

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
