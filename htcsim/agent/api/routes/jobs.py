"""Jobs: submit (one, an array, a batch), list, show, history, logs, cancel/hold/release.

A user sees and acts on their own jobs only; another user's job is a 404,
as a job that does not exist. ``PUBLIC_COLUMNS`` are the store's columns a
job's answer carries (``_public``), with the kernel's live view of a
pending job (reason, priority, estimated start) laid over them.
"""

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from htcsim.agent.api.deps import Caller, EngineDep, IdempotencyDep, Readers, ReadersDep, ask
from htcsim.agent.api.errors import ERRORS, ApiError
from htcsim.agent.api.guards import check_job_paths, has_surrogate, listing_response
from htcsim.agent.api.idempotency import Idempotency, IdempotencyKey
from htcsim.agent.api.schemas import (
    MAX_ID,
    BatchRequest,
    BulkRequest,
    BulkResult,
    JobIds,
    JobRequest,
    parse_array,
)
from htcsim.agent.config import AgentConfig
from htcsim.agent.engine.loop import Engine
from htcsim.agent.engine.principal import Principal
from htcsim.agent.store.jobs import JOB_STATES, JobFilter, Keyed, NewJob

PUBLIC_COLUMNS = (
    "id",
    "name",
    "user",
    "grp",
    "state",
    "reason",
    "command",
    "cwd",
    "cores",
    "mem_mib",
    "gpus",
    "walltime_s",
    "qos",
    "array_id",
    "array_index",
    "submit_time",
    "start_time",
    "end_time",
    "exit_code",
    "node",
    "requeues",
    "stdout",
    "stderr",
    "pid",
    "cpu_time_s",
    "max_rss_mib",
    "signal",
    "signal_before_s",
    "workflow_id",
    "gpu_ids",
)


LIVE_FIELDS = ("priority", "factors", "estimated_start")
"""A job's fields from the kernel's view (``reason`` too, over the stored one)."""
FIELDS = tuple("group" if c == "grp" else c for c in PUBLIC_COLUMNS) + LIVE_FIELDS
"""What ``GET /jobs?fields=`` may name."""

JobIdPath = Annotated[int, PathParam(ge=1, le=MAX_ID)]
"""A job id in a path: bounded as SQLite's integers are (a bigger one is a 422, not a 500)."""

router = APIRouter()


def visible(readers: Readers, principal: Principal, job_id: int) -> dict[str, Any]:
    try:
        row = readers.get().job(job_id)
    except KeyError:
        raise ApiError(404, f"no job {job_id}", "job_id") from None
    if not principal.is_admin and row["user"] != principal.user:
        raise ApiError(404, f"no job {job_id}", "job_id")
    return row


def new_jobs(
    readers: Readers, principal: Principal, request: JobRequest, config: AgentConfig
) -> list[NewJob]:
    for key in ("command", "env", "cwd", "stdout", "stderr"):
        if has_surrogate(getattr(request, key)):
            raise ApiError(422, f"{key}: holds text that is not valid Unicode", key)
    check_job_paths(config, request.cwd, request.stdout, request.stderr)
    if not os.path.isdir(request.cwd):
        raise ApiError(422, f"cwd: {request.cwd} is not a directory on the agent", "cwd")
    for key in ("after_ok", "after_any", "after_not_ok"):
        # jobs are never deleted, so one that exists now still exists when the loop
        # admits the request; checked here to name the field (the loop checks again)
        parents: list[int] = getattr(request, key)
        known = readers.get().states_of(parents) if parents else {}
        unknown = [p for p in parents if p not in known]
        if unknown:
            raise ApiError(422, f"{key}: no job {unknown[0]}", key)
    depends = tuple(
        [(p, "afterok", 0) for p in request.after_ok]
        + [(p, "afterany", 0) for p in request.after_any]
        + [(p, "afternotok", 0) for p in request.after_not_ok]
    )
    base = NewJob(
        user=principal.user,
        group=principal.group,
        command=request.command,
        cwd=request.cwd,
        cores=request.cores,
        walltime_s=request.walltime_s,
        mem_mib=request.mem_mib,
        gpus=request.gpus,
        name=request.name,
        env=request.env,
        qos=request.qos,
        hold=request.hold,
        depends_on=depends,
        stdout=request.stdout,
        stderr=request.stderr,
        signal=request.signal,
        signal_before_s=request.signal_before_s if request.signal else 0,
    )
    if request.array is None:
        return [base]
    return [replace(base, array_index=k) for k in parse_array(request.array)]


@router.post("/jobs", status_code=201, responses=ERRORS, tags=["jobs"])
async def submit(
    request: JobRequest,
    principal: Caller,
    engine: EngineDep,
    readers: ReadersDep,
    idempotency: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> JobIds:
    """Submit one job or one job array (durable when this answers); a retry with the
    same ``Idempotency-Key`` returns the first request's ids and creates nothing."""
    return await submit_job(engine, readers, idempotency, principal, request, idempotency_key)


async def submit_job(
    engine: Engine,
    readers: Readers,
    idempotency: Idempotency,
    principal: Principal,
    request: JobRequest,
    key: str | None,
) -> JobIds:
    """What ``POST /jobs`` does once its request is parsed and its caller known
    (the route's body, shared with ``SubmitLane``)."""

    def answer(ids: list[int]) -> dict[str, Any]:
        return {"ids": ids, "array_id": ids[0] if request.array is not None else None}

    async def run(keyed: Keyed | None) -> dict[str, Any]:
        jobs = new_jobs(readers, principal, request, engine.config)
        return dict(await ask(engine.submit(principal, jobs, keyed=keyed, answer=answer)))

    def body() -> Any:
        return request.model_dump(mode="json")

    return JobIds(**await idempotency.run(principal, key, "jobs", body, run))


@router.post("/jobs/batch", status_code=201, responses=ERRORS, tags=["jobs"])
async def submit_batch(
    request: BatchRequest,
    principal: Caller,
    engine: EngineDep,
    readers: ReadersDep,
    idempotency: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> JobIds:
    """Submit many jobs at once, all or none (``Idempotency-Key`` as for one job)."""

    async def run(keyed: Keyed | None) -> dict[str, Any]:
        jobs: list[NewJob] = []
        for k, job in enumerate(request.jobs):
            try:
                jobs += new_jobs(readers, principal, job, engine.config)
            except ApiError as exc:
                raise ApiError(
                    exc.status, f"jobs.{k}.{exc.detail}", f"jobs.{k}.{exc.field}"
                ) from None
        return dict(await ask(engine.submit(principal, jobs, keyed=keyed, answer=_ids)))

    def body() -> Any:
        return request.model_dump(mode="json")

    return JobIds(**await idempotency.run(principal, idempotency_key, "batch", body, run))


def _ids(ids: list[int]) -> dict[str, Any]:
    return {"ids": ids}


def bulk_action(name: str) -> None:
    async def act(request: BulkRequest, principal: Caller, engine: EngineDep) -> BulkResult:
        for s in request.state:
            if s not in JOB_STATES:
                raise ApiError(
                    422, f"state: unknown state {s!r} (known: {', '.join(JOB_STATES)})", "state"
                )
        where = JobFilter(
            array_id=request.array_id,
            user=request.user,
            states=tuple(dict.fromkeys(request.state)),
            name=request.name,
        )
        if not request.ids and where.empty:
            raise ApiError(422, "select jobs: give ids, array_id, user, state or name", "ids")
        return BulkResult(**await ask(engine.bulk(principal, name, request.ids, where)))

    act.__doc__ = (
        f"{name.capitalize()} many jobs in one durable step: the ids named, or those an array "
        "id and a filter (user, state, name glob) select; a user selects their own jobs only. "
        "Answers the ids acted on, and an error (404, 409) for each named id refused."
    )
    router.post(f"/jobs/{name}", responses=ERRORS, tags=["jobs"], name=f"bulk_{name}")(act)


bulk_action("cancel")
bulk_action("hold")
bulk_action("release")


@router.get("/jobs", responses=ERRORS, tags=["jobs"], response_model=dict[str, Any])
async def list_jobs(
    principal: Caller,
    engine: EngineDep,
    readers: ReadersDep,
    state: Annotated[list[str] | None, Query()] = None,
    user: str | None = None,
    array_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    estimate: bool = False,
    fields: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """Jobs in id order, one page (``limit``, at most 10,000); ``next`` is the ``after``
    of the next page. Pending and held jobs carry their reason and priority (and
    pending ones their estimated start with ``estimate``), from a copy of the queue
    at most a second old that holds them in their state (older for a queue whose
    estimates take longer than that). ``fields`` (repeated or comma lists): only
    these fields of each job, and its id."""
    wanted = _wanted(fields)
    states = state or []
    for s in states:
        if s not in JOB_STATES:
            raise ApiError(
                422, f"state: unknown state {s!r} (known: {', '.join(JOB_STATES)})", "state"
            )
    if not principal.is_admin:
        if user is not None and user != principal.user:
            raise ApiError(403, "a user lists only their own jobs", "user")
        user = principal.user

    def read() -> Response:
        rows = readers.get().jobs(
            states=states,
            user=user,
            limit=limit,
            after_id=after,
            array_id=array_id,
            columns=_columns(wanted),
        )
        waiting = [r for r in rows if r["state"] in ("pending", "held")]
        live = engine.live(
            [r["id"] for r in waiting], [r["state"] for r in waiting], estimate=estimate
        )
        jobs = [_public(r, live.get(r["id"]), wanted) for r in rows]
        return listing_response("jobs", jobs, next=rows[-1]["id"] if len(rows) == limit else None)

    return await run_in_threadpool(read)


@router.get("/jobs/{job_id}", responses=ERRORS, tags=["jobs"])
async def get_job(
    job_id: JobIdPath, principal: Caller, engine: EngineDep, readers: ReadersDep
) -> dict[str, Any]:
    """One job: state, reason, priority factors, estimated start, node, exit code, logs."""

    def read() -> dict[str, Any]:
        row = visible(readers, principal, job_id)
        waiting = row["state"] in ("pending", "held")
        live = engine.live([job_id], [row["state"]], estimate=True).get(job_id) if waiting else None
        out = _public(row, live)
        out["dependencies"] = [
            {"job": p, "kind": k, "delay_s": d} for p, k, d in readers.get().dependencies(job_id)
        ]
        out["env"] = row["env"]
        return out

    return await run_in_threadpool(read)


@router.get("/jobs/{job_id}/history", responses=ERRORS, tags=["jobs"])
async def history(job_id: JobIdPath, principal: Caller, readers: ReadersDep) -> dict[str, Any]:
    """Every state change of a job: time, state, cause."""
    visible(readers, principal, job_id)
    events = readers.get().history(job_id)
    return {
        "job": job_id,
        "events": [{"time": t, "state": s, "cause": c} for t, s, c in events],
    }


@router.get("/jobs/{job_id}/log", responses=ERRORS, tags=["jobs"])
async def job_log(
    job_id: JobIdPath,
    principal: Caller,
    engine: EngineDep,
    readers: ReadersDep,
    stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
    tail: Annotated[int, Query(ge=0, le=1 << 26)] = 65536,
) -> PlainTextResponse:
    """The last ``tail`` bytes of a job's stdout or stderr."""
    row = visible(readers, principal, job_id)
    path = row[stream]
    if not path:
        raise ApiError(404, f"job {job_id} has no {stream} yet (not started)", "stream")
    try:  # from the node that ran it (a Dask worker's disk, or this machine's)
        data = await run_in_threadpool(engine.read_log, row, stream, tail)
    except OSError as exc:
        raise ApiError(404, f"{stream} of job {job_id}: {exc.strerror}: {path}", "stream") from None
    except Exception as exc:  # the remote read failed (worker gone...)
        raise ApiError(404, f"{stream} of job {job_id}: {exc}", "stream") from None
    return PlainTextResponse(data.decode(errors="replace"))


def job_action(name: str, method: Callable[[Engine, Principal, list[int]], Any]) -> None:
    async def act(job_id: JobIdPath, principal: Caller, engine: EngineDep) -> dict[str, Any]:
        ids = await ask(method(engine, principal, [job_id]))
        return {"ids": ids}

    act.__doc__ = f"{name.capitalize()} a job (a user acts on their own jobs only)."
    router.post(f"/jobs/{{job_id}}/{name}", responses=ERRORS, tags=["jobs"], name=name)(act)


job_action("cancel", Engine.cancel)
job_action("hold", Engine.hold)
job_action("release", Engine.release)


@router.delete("/jobs/{job_id}", responses=ERRORS, tags=["jobs"])
async def delete_job(job_id: JobIdPath, principal: Caller, engine: EngineDep) -> dict[str, Any]:
    """Cancel a job (as POST /jobs/{id}/cancel)."""
    return {"ids": await ask(engine.cancel(principal, [job_id]))}


def _wanted(fields: list[str] | None) -> frozenset[str] | None:
    """The fields a listing asks for (None: all), each one known."""
    if not fields:
        return None
    wanted = {f.strip() for value in fields for f in value.split(",") if f.strip()}
    for name in sorted(wanted):
        if name not in FIELDS:
            raise ApiError(
                422, f"fields: unknown field {name!r} (known: {', '.join(FIELDS)})", "fields"
            )
    return frozenset(wanted | {"id"})


def _columns(wanted: frozenset[str] | None) -> tuple[str, ...]:
    """The store's columns a listing reads: the fields asked for, and what it needs
    itself (the id for paging, the state to ask the kernel's view)."""
    if wanted is None:
        return PUBLIC_COLUMNS
    names = wanted | {"id", "state"} | ({"grp"} if "group" in wanted else set())
    return tuple(c for c in PUBLIC_COLUMNS if c in names)


def _public(
    row: dict[str, Any], live: dict[str, Any] | None, wanted: frozenset[str] | None = None
) -> dict[str, Any]:
    out = {k: row[k] for k in PUBLIC_COLUMNS if k in row}
    if "grp" in out:
        out["group"] = out.pop("grp")
    if live is not None:
        out["reason"] = live.get("reason", row.get("reason"))
        out["priority"] = live.get("priority")
        out["factors"] = live.get("factors")
        if "estimated_start" in live:
            out["estimated_start"] = live["estimated_start"]
    if wanted is not None:
        out = {k: v for k, v in out.items() if k in wanted}
    return out
