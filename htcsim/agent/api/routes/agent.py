"""The agent itself: is it alive (no token needed), and who does a token stand for."""

from typing import Any

from fastapi import APIRouter

from htcsim.agent.api.deps import Caller, EngineDep
from htcsim.agent.api.errors import ERRORS, ApiError

router = APIRouter()


@router.get("/healthz", tags=["agent"])
async def healthz(engine: EngineDep) -> dict[str, Any]:
    """Liveness: answers without a token; 503 when the scheduling loop stopped or
    the executor cannot run jobs (e.g. the shepherd is gone or took another
    agent's connection)."""
    if not engine.alive:
        raise ApiError(503, "the scheduling loop is not running")
    ok, reason = engine.executor_health()
    if not ok:
        raise ApiError(503, f"the executor is not usable: {reason}")
    return {"status": "ok", "passes": engine.passes}


@router.get("/whoami", responses=ERRORS, tags=["agent"])
async def whoami(principal: Caller) -> dict[str, str]:
    """The user, role and group the token stands for."""
    return {"user": principal.user, "role": principal.role, "group": principal.group}
