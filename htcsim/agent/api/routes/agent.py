"""The agent itself: is it alive (no token needed), and who does a token stand for."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from htcsim.agent.api.deps import Caller, EngineDep
from htcsim.agent.api.errors import ERRORS

router = APIRouter()


@router.get("/healthz", tags=["agent"], response_model=None)
async def healthz(engine: EngineDep) -> dict[str, Any] | JSONResponse:
    """Health, without a token: 200 ``ok``; 200 ``degraded`` while the agent works
    impaired (the shepherd restarting, its keeper gone: ``reasons``); 503
    ``down`` when it cannot run jobs (the scheduling loop stopped, the shepherd
    taken over by another agent or not restarted for 10 s), ``detail`` saying
    why. The local backend adds the shepherd: pids, restarts, the last one."""
    health = engine.health(engine.alive) | {"passes": engine.passes}
    if health["status"] == "down":
        reasons = health["reasons"]
        detail = reasons[0] if not engine.alive else f"the executor is not usable: {reasons[0]}"
        return JSONResponse({"detail": detail, **health}, status_code=503)
    return health


@router.get("/whoami", responses=ERRORS, tags=["agent"])
async def whoami(principal: Caller) -> dict[str, str]:
    """The user, role and group the token stands for."""
    return {"user": principal.user, "role": principal.role, "group": principal.group}
