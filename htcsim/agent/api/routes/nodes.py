"""Nodes: their states and free resources, and draining or resuming one (admin)."""

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.deps import Admin, Caller, EngineDep, ask
from htcsim.agent.api.errors import ERRORS

router = APIRouter()


@router.get("/nodes", responses=ERRORS, tags=["nodes"])
async def nodes(principal: Caller, engine: EngineDep) -> dict[str, Any]:
    """Node states (idle, mixed, allocated, draining, drained, down) and free resources."""
    return {"nodes": await run_in_threadpool(engine.nodes)}


@router.post("/nodes/{name}/drain", responses=ERRORS, tags=["nodes"])
async def drain(name: str, principal: Admin, engine: EngineDep) -> dict[str, Any]:
    """No new job on the node; it is drained when its jobs end (admin)."""
    return {"node": name, "state": await ask(engine.drain(name))}


@router.post("/nodes/{name}/resume", responses=ERRORS, tags=["nodes"])
async def resume(name: str, principal: Admin, engine: EngineDep) -> dict[str, Any]:
    """Back to service (admin)."""
    return {"node": name, "state": await ask(engine.resume(name))}
