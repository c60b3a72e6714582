"""The cluster as a whole: jobs and nodes per state, cores, utilization, pass statistics."""

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.deps import Caller, EngineDep, ReadersDep
from htcsim.agent.api.errors import ERRORS

router = APIRouter()


@router.get("/cluster", responses=ERRORS, tags=["agent"])
async def cluster(principal: Caller, engine: EngineDep, readers: ReadersDep) -> dict[str, Any]:
    """Jobs per state, nodes per state, cores, utilization, pass statistics."""
    counts = readers.get().counts()
    return await run_in_threadpool(engine.summary, counts)
