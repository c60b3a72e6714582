"""Shadow mode's report: where a candidate policy would have scheduled otherwise.

Answers 404 when the agent runs no shadow policy (``--shadow-policy``).
"""

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.deps import Caller, ShadowDep
from htcsim.agent.api.errors import ERRORS, ApiError
from htcsim.agent.api.schemas import ShadowReport

router = APIRouter()


@router.get("/shadow", responses=ERRORS, tags=["policy"])
async def shadow_report(
    principal: Caller, shadow: ShadowDep, limit: Annotated[int, Query(ge=0, le=10_000)] = 100
) -> ShadowReport:
    """Shadow mode: where the candidate policy (``--shadow-policy``) would have
    started jobs otherwise than the active one, and its simulated waits;
    ``limit`` differences are listed, by job id."""
    if shadow is None:
        raise ApiError(
            404,
            "no shadow policy: start the agent with --shadow-policy FILE "
            "(shadow_policy in its settings) to compare a candidate policy",
        )
    return ShadowReport.model_validate(await run_in_threadpool(shadow.report, limit))
