"""The REST API (FastAPI): thin handlers that read the store and send commands.

Why thin: no scheduling rule may live here. A handler checks the request
(schemas), finds who is calling (auth), then either reads (the store through
its own connection, the kernel's queries under the kernel lock, in a worker
thread so the event loop keeps answering) or hands a command to the
scheduling loop and awaits its answer, which comes once the change is
durable.
"""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations,
# which name dependencies defined inside create_app
import asyncio
import os
import threading
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from htcsim.agent.api.auth import load_tokens
from htcsim.agent.api.schemas import (
    MAX_CORES,
    MAX_GPUS,
    MAX_ID,
    MAX_MEM_MIB,
    MAX_WALLTIME_S,
    BatchRequest,
    JobIds,
    JobRequest,
    PolicyRequest,
    Problem,
    ShadowReport,
    WorkflowRequest,
    parse_array,
)
from htcsim.agent.engine.loop import Engine, EngineError
from htcsim.agent.engine.principal import Principal
from htcsim.agent.engine.workflow import WorkflowError, workflow_from_mapping, workflow_progress
from htcsim.agent.shadow.runner import ShadowRunner
from htcsim.agent.store.jobs import JOB_STATES, AgentStore, NewJob
from htcsim.policy import PolicyError, policy_from_mapping, policy_to_toml

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
)


JobIdPath = Annotated[int, PathParam(ge=1, le=MAX_ID)]
"""A job id in a path: bounded as SQLite's integers are (a bigger one is a 422, not a 500)."""


class ApiError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        self.status, self.detail, self.field = status, detail, field


class Readers:
    """One read connection per thread (SQLite connections are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def get(self) -> AgentStore:
        store: AgentStore | None = getattr(self._local, "store", None)
        if store is None:
            store = AgentStore(self.path, readonly=True)
            self._local.store = store
        return store


class Tokens:
    """The token file, read again when it changes (add a user without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._table: dict[str, Principal] = {}

    def lookup(self, token: str) -> Principal | None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime != self._mtime:
            self._table = load_tokens(self.path)
            self._mtime = mtime
        return self._table.get(token)


def create_app(engine: Engine, tokens: Tokens, shadow: ShadowRunner | None = None) -> FastAPI:
    """The API of one agent (``shadow``: its shadow-mode twin, if it runs one)."""
    app = FastAPI(
        title="htcsim agent",
        description="Submit, watch and control jobs scheduled by htcsim's kernel.",
        version="1",
    )
    readers = Readers(engine.config.db_path)
    bearer = HTTPBearer(auto_error=False)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            Problem(detail=exc.detail, field=exc.field).model_dump(), exc.status, headers=headers
        )

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse(Problem(detail=str(exc), field=exc.field).model_dump(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":  # its loc is a character position, not a field
            where = "body"
            message = f"not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})"
        else:
            where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
            where = where or "body"
            message = str(first["msg"]).removeprefix("Value error, ")
        return JSONResponse(Problem(detail=f"{where}: {message}", field=where).model_dump(), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 400 is Starlette's "error parsing the body" (not JSON, not UTF-8)
        where = "body" if exc.status_code == 400 else None
        return JSONResponse(
            Problem(detail=str(exc.detail), field=where).model_dump(), exc.status_code
        )

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if credentials is None:
            raise ApiError(401, "a bearer token is required (Authorization: Bearer TOKEN)")
        principal = tokens.lookup(credentials.credentials)
        if principal is None:
            raise ApiError(401, "unknown token")
        return principal

    def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not principal.is_admin:
            raise ApiError(403, f"user {principal.user!r} is not an admin")
        return principal

    Caller = Annotated[Principal, Depends(caller)]
    Admin = Annotated[Principal, Depends(admin)]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem},
        404: {"model": Problem},
        409: {"model": Problem},
        422: {"model": Problem},
    }

    async def ask(future: Any) -> Any:
        return await asyncio.wrap_future(future)

    def visible(principal: Principal, job_id: int) -> dict[str, Any]:
        try:
            row = readers.get().job(job_id)
        except KeyError:
            raise ApiError(404, f"no job {job_id}", "job_id") from None
        if not principal.is_admin and row["user"] != principal.user:
            raise ApiError(404, f"no job {job_id}", "job_id")
        return row

    def new_jobs(principal: Principal, request: JobRequest) -> list[NewJob]:
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

    @app.get("/healthz", tags=["agent"])
    async def healthz() -> dict[str, Any]:
        """Liveness: answers without a token; 503 when the scheduling loop stopped."""
        if not engine.alive:
            raise ApiError(503, "the scheduling loop is not running")
        return {"status": "ok", "passes": engine.passes}

    @app.get("/whoami", responses=errors, tags=["agent"])
    async def whoami(principal: Caller) -> dict[str, str]:
        """The user, role and group the token stands for."""
        return {"user": principal.user, "role": principal.role, "group": principal.group}

    @app.post("/jobs", status_code=201, responses=errors, tags=["jobs"])
    async def submit(request: JobRequest, principal: Caller) -> JobIds:
        """Submit one job or one job array (durable when this answers)."""
        jobs = new_jobs(principal, request)
        ids = await ask(engine.submit(principal, jobs))
        return JobIds(ids=ids, array_id=ids[0] if request.array is not None else None)

    @app.post("/jobs/batch", status_code=201, responses=errors, tags=["jobs"])
    async def submit_batch(request: BatchRequest, principal: Caller) -> JobIds:
        """Submit many jobs at once, all or none."""
        jobs: list[NewJob] = []
        for k, job in enumerate(request.jobs):
            try:
                jobs += new_jobs(principal, job)
            except ApiError as exc:
                raise ApiError(
                    exc.status, f"jobs.{k}.{exc.detail}", f"jobs.{k}.{exc.field}"
                ) from None
        ids = await ask(engine.submit(principal, jobs))
        return JobIds(ids=ids)

    @app.get("/jobs", responses=errors, tags=["jobs"])
    async def list_jobs(
        principal: Caller,
        state: Annotated[list[str] | None, Query()] = None,
        user: str | None = None,
        array_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        estimate: bool = False,
    ) -> dict[str, Any]:
        """Jobs in id order, one page; ``next`` is the ``after`` of the next page.
        Pending jobs carry their reason and priority (and estimated start with ``estimate``)."""
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

        def read() -> dict[str, Any]:
            rows = readers.get().jobs(
                states=states, user=user, limit=limit, after_id=after, array_id=array_id
            )
            live = engine.live(
                [r["id"] for r in rows if r["state"] in ("pending", "held")], estimate=estimate
            )
            jobs = [_public(r, live.get(r["id"])) for r in rows]
            return {"jobs": jobs, "next": rows[-1]["id"] if len(rows) == limit else None}

        return await run_in_threadpool(read)

    @app.get("/jobs/{job_id}", responses=errors, tags=["jobs"])
    async def get_job(job_id: JobIdPath, principal: Caller) -> dict[str, Any]:
        """One job: state, reason, priority factors, estimated start, node, exit code, logs."""

        def read() -> dict[str, Any]:
            row = visible(principal, job_id)
            live = engine.live([job_id], estimate=True).get(job_id)
            out = _public(row, live)
            out["dependencies"] = [
                {"job": p, "kind": k, "delay_s": d}
                for p, k, d in readers.get().dependencies(job_id)
            ]
            out["env"] = row["env"]
            return out

        return await run_in_threadpool(read)

    @app.get("/jobs/{job_id}/history", responses=errors, tags=["jobs"])
    async def history(job_id: JobIdPath, principal: Caller) -> dict[str, Any]:
        """Every state change of a job: time, state, cause."""
        visible(principal, job_id)
        events = readers.get().history(job_id)
        return {
            "job": job_id,
            "events": [{"time": t, "state": s, "cause": c} for t, s, c in events],
        }

    @app.get("/jobs/{job_id}/log", responses=errors, tags=["jobs"])
    async def job_log(
        job_id: JobIdPath,
        principal: Caller,
        stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
        tail: Annotated[int, Query(ge=0, le=1 << 26)] = 65536,
    ) -> PlainTextResponse:
        """The last ``tail`` bytes of a job's stdout or stderr."""
        row = visible(principal, job_id)
        path = row[stream]
        if not path:
            raise ApiError(404, f"job {job_id} has no {stream} yet (not started)", "stream")
        try:  # from the node that ran it (a Dask worker's disk, or this machine's)
            data = await run_in_threadpool(engine.read_log, row, stream, tail)
        except OSError as exc:
            raise ApiError(
                404, f"{stream} of job {job_id}: {exc.strerror}: {path}", "stream"
            ) from None
        except Exception as exc:  # the remote read failed (worker gone...)
            raise ApiError(404, f"{stream} of job {job_id}: {exc}", "stream") from None
        return PlainTextResponse(data.decode(errors="replace"))

    def job_action(name: str, method: Callable[[Principal, list[int]], Any]) -> None:
        async def act(job_id: JobIdPath, principal: Caller) -> dict[str, Any]:
            ids = await ask(method(principal, [job_id]))
            return {"ids": ids}

        act.__doc__ = f"{name.capitalize()} a job (a user acts on their own jobs only)."
        app.post(f"/jobs/{{job_id}}/{name}", responses=errors, tags=["jobs"], name=name)(act)

    job_action("cancel", engine.cancel)
    job_action("hold", engine.hold)
    job_action("release", engine.release)

    @app.delete("/jobs/{job_id}", responses=errors, tags=["jobs"])
    async def delete_job(job_id: JobIdPath, principal: Caller) -> dict[str, Any]:
        """Cancel a job (as POST /jobs/{id}/cancel)."""
        return {"ids": await ask(engine.cancel(principal, [job_id]))}

    @app.post("/workflows", status_code=201, responses=errors, tags=["workflows"])
    async def submit_workflow(request: WorkflowRequest, principal: Caller) -> dict[str, Any]:
        """A whole DAG of jobs, accepted atomically (all or none); cycles are refused."""
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
        ids = await ask(engine.submit(principal, workflow.jobs, workflow.name))
        return {
            "name": workflow.name,
            "ids": ids,
            "jobs": dict(zip(workflow.names, ids, strict=True)),
        }

    @app.get("/workflows/{name}", responses=errors, tags=["workflows"])
    async def workflow_status(
        name: str, principal: Caller, user: str | None = None
    ) -> dict[str, Any]:
        """Progress of a workflow: counts per state, overall state, per-job rows."""
        owner = user if principal.is_admin and user else principal.user
        try:
            record = readers.get().workflow(name, owner)
        except KeyError as exc:
            raise ApiError(404, str(exc).strip("'\""), "name") from None
        return workflow_progress(record)

    @app.get("/nodes", responses=errors, tags=["nodes"])
    async def nodes(principal: Caller) -> dict[str, Any]:
        """Node states (idle, mixed, allocated, draining, drained, down) and free resources."""
        return {"nodes": await run_in_threadpool(engine.nodes)}

    @app.post("/nodes/{name}/drain", responses=errors, tags=["nodes"])
    async def drain(name: str, principal: Admin) -> dict[str, Any]:
        """No new job on the node; it is drained when its jobs end (admin)."""
        return {"node": name, "state": await ask(engine.drain(name))}

    @app.post("/nodes/{name}/resume", responses=errors, tags=["nodes"])
    async def resume(name: str, principal: Admin) -> dict[str, Any]:
        """Back to service (admin)."""
        return {"node": name, "state": await ask(engine.resume(name))}

    @app.get("/cluster", responses=errors, tags=["agent"])
    async def cluster(principal: Caller) -> dict[str, Any]:
        """Jobs per state, nodes per state, cores, utilization, pass statistics."""
        counts = readers.get().counts()
        return await run_in_threadpool(engine.summary, counts)

    @app.get("/policy", responses=errors, tags=["policy"])
    async def get_policy(principal: Caller) -> dict[str, Any]:
        """The policy in force, as TOML and as fields."""
        return {"toml": policy_to_toml(engine.policy), "policy": engine.policy.to_dict()}

    @app.put("/policy", responses=errors, tags=["policy"])
    async def put_policy(request: PolicyRequest, principal: Admin) -> dict[str, Any]:
        """Replace the policy (admin): validated first, recorded in the audit log."""
        try:
            policy = policy_from_mapping(tomllib.loads(request.toml), source="policy")
        except tomllib.TOMLDecodeError as exc:
            raise ApiError(422, f"toml: not valid TOML ({exc})", "toml") from None
        except PolicyError as exc:
            raise ApiError(422, str(exc), exc.field or "toml") from None
        audit = await ask(engine.set_policy(principal, policy, request.note))
        return {"audit_id": audit, "policy": policy.to_dict()}

    @app.get("/shadow", responses=errors, tags=["policy"])
    async def shadow_report(
        principal: Caller, limit: Annotated[int, Query(ge=0, le=10_000)] = 100
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

    @app.get("/metrics", tags=["agent"], response_class=Response)
    async def metrics(principal: Caller) -> Response:
        """Prometheus metrics (text exposition format)."""
        counts = readers.get().counts()
        await run_in_threadpool(engine.refresh_metrics, counts)
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


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


def _public(row: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    out = {k: row[k] for k in PUBLIC_COLUMNS}
    out["group"] = out.pop("grp")
    if live is not None:
        out["reason"] = live.get("reason", out["reason"])
        out["priority"] = live.get("priority")
        out["factors"] = live.get("factors")
        if "estimated_start" in live:
            out["estimated_start"] = live["estimated_start"]
    return out
