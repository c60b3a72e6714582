"""``Idempotency-Key``: a retried submission returns the first one's jobs.

Why: a client whose ``POST /jobs`` timed out cannot know whether the jobs
exist; retrying with the same key is then safe. The key is the caller's
(two users may use the same key), kept ``idempotency_ttl_s`` (24 h by
default) in the store's ``idempotency`` table, so it holds across a restart
of the agent. The same key with a different request (another body or
route) is a 409.

The scheduling loop records the key with the request's answer in the same
transaction as the request's jobs (``Admission._do_submit``): both are
durable when the client hears back, or neither is, so no crash can leave
the jobs without their key. The loop is the one writer and applies
submissions one at a time, so two concurrent requests with the same key
cannot both create jobs: the second finds the first's record. A retry is
answered here first, from a read of the store, without a turn of the loop
and before the request's paths are checked again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.errors import ApiError
from htcsim.agent.config import AgentConfig
from htcsim.agent.engine.admission import KEY_REUSED
from htcsim.agent.engine.principal import Principal
from htcsim.agent.store.jobs import AgentStore, Keyed

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="a retry with the same key returns the first request's jobs, creating none",
    ),
]


class Idempotency:
    """The Idempotency-Key handling of the submitting routes (one per agent)."""

    def __init__(self, config: AgentConfig, reader: Callable[[], AgentStore]) -> None:
        """``reader()``: a read-only store connection of the calling thread."""
        self.config = config
        self.reader = reader

    async def run(
        self,
        principal: Principal,
        key: str | None,
        route: str,
        body: Callable[[], Any],
        submit: Callable[[Keyed | None], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """``submit(keyed)``'s answer, or the one recorded for ``key`` by an earlier
        request. ``body()`` gives the request's body as JSON (read only with a key)."""
        if key is None:
            return await submit(None)
        if not key.strip():
            raise ApiError(422, "Idempotency-Key: must not be empty", "Idempotency-Key")
        text = json.dumps([route, body()], sort_keys=True, ensure_ascii=True)
        keyed = Keyed(key, hashlib.sha256(text.encode()).hexdigest())
        since = time.time() - self.config.idempotency_ttl_s
        found = await run_in_threadpool(
            lambda: self.reader().idempotent_answer(principal.user, key, since)
        )
        if found is not None:
            request, answer = found
            if request != keyed.request:
                raise ApiError(409, KEY_REUSED, "Idempotency-Key")
            return dict(answer)
        return await submit(keyed)
