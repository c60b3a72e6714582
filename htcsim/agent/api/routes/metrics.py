"""The agent's Prometheus metrics, refreshed from the store and the kernel on each scrape."""

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.deps import Caller, EngineDep, ReadersDep

router = APIRouter()


@router.get("/metrics", tags=["agent"], response_class=Response)
async def metrics(principal: Caller, engine: EngineDep, readers: ReadersDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    counts = readers.get().counts()
    await run_in_threadpool(engine.refresh_metrics, counts)
    return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4")
