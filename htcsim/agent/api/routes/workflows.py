"""Workflows: submit a whole DAG of jobs at once, and follow its progress.

A workflow's jobs are built by the workflow parser, not by ``JobRequest``,
so ``_check_bounds`` puts the request's upper bounds on them here.
"""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.deps import Caller, EngineDep, IdempotencyDep, ReadersDep, ask
from htcsim.agent.api.errors import ERRORS, ApiError
from htcsim.agent.api.guards import check_job_paths, has_surrogate
from htcsim.agent.api.idempotency import IdempotencyKey
from htcsim.agent.api.schemas import (
    MAX_CORES,
    MAX_GPUS,
    MAX_ID,
    MAX_MEM_MIB,
    MAX_WALLTIME_S,
    WorkflowRequest,
)
from htcsim.agent.engine.workflow import WorkflowError, workflow_from_mapping, workflow_progress
from htcsim.agent.store.jobs import Keyed, NewJob

router = APIRouter()


@router.post("/workflows", status_code=201, responses=ERRORS, tags=["workflows"])
async def submit_workflow(
    request: WorkflowRequest,
    principal: Caller,
    engine: EngineDep,
    idempotency: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """A whole DAG of jobs, accepted atomically (all or none); cycles are refused
    (``Idempotency-Key`` as for ``POST /jobs``)."""
    if has_surrogate(request.workflow) or has_surrogate(request.base_dir):
        raise ApiError(422, "workflow: holds text that is not valid Unicode", "workflow")

    async def run(keyed: Keyed | None) -> dict[str, Any]:
        try:
            workflow = workflow_from_mapping(
                request.workflow,
                source="workflow",
                base_dir=Path(request.base_dir),
                user=principal.user,
                group=principal.group,
                default_walltime_s=3600,
            )
        except WorkflowError as exc:
            raise ApiError(422, str(exc), "workflow") from None
        for job in workflow.jobs:
            _check_bounds(job)
            try:
                check_job_paths(engine.config, job.cwd, job.stdout, job.stderr)
            except ApiError as exc:
                raise ApiError(
                    422, f"workflow: job {job.name!r}: {exc.detail}", "workflow"
                ) from None

        def answer(ids: list[int]) -> dict[str, Any]:
            return {
                "name": workflow.name,
                "ids": ids,
                "jobs": dict(zip(workflow.names, ids, strict=True)),
            }

        return dict(
            await ask(
                engine.submit(principal, workflow.jobs, workflow.name, keyed=keyed, answer=answer)
            )
        )

    def body() -> Any:
        return request.model_dump(mode="json")

    return await idempotency.run(principal, idempotency_key, "workflows", body, run)


@router.get("/workflows/{name}", responses=ERRORS, tags=["workflows"])
async def workflow_status(
    name: str,
    principal: Caller,
    readers: ReadersDep,
    user: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """Progress of a workflow: counts per state and overall state (of all its jobs),
    and its jobs' rows in id order, one page (``limit``, at most 10,000); ``next``
    is the ``after`` of the next page."""
    owner = user if principal.is_admin and user else principal.user

    def read() -> dict[str, Any]:
        try:
            record = readers.get().workflow(name, owner, limit=limit, after_id=after)
        except KeyError as exc:
            raise ApiError(404, str(exc).strip("'\""), "name") from None
        return workflow_progress(record, page=limit)

    return await run_in_threadpool(read)


_BOUNDS = (
    ("cores", 1, MAX_CORES),
    ("mem_mib", 0, MAX_MEM_MIB),
    ("gpus", 0, MAX_GPUS),
    ("walltime_s", 1, MAX_WALLTIME_S),
    ("signal_before_s", 0, MAX_WALLTIME_S),
)


def _check_bounds(job: NewJob) -> None:
    """The bounds JobRequest puts on a job, for jobs built from a workflow file (whose
    parser checks only the lower ones): a huge number would overflow the kernel's
    int64 arrays or SQLite inside the scheduling loop."""
    for key, low, high in _BOUNDS:
        value = getattr(job, key)
        if not low <= value <= high:
            where = f"workflow: job {job.name!r}: {key.removesuffix('_mib').removesuffix('_s')}"
            raise ApiError(422, f"{where}: must be {low}..{high}, got {value}", "workflow")
