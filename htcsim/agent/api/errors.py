"""What a failed request answers: a status and a Problem body (detail, field).

``ApiError`` is what a handler or a dependency raises to refuse a request;
``ERRORS`` is the table of error responses the routes declare in the
schema. The four handlers turn an ``ApiError``, the engine's
``EngineError``, FastAPI's validation errors and Starlette's HTTP errors
into the same Problem body; ``create_app`` registers them on the app.
"""

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse as _JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from htcsim.agent.api.schemas import Problem
from htcsim.agent.engine.loop import EngineError


class JSONResponse(_JSONResponse):
    """JSON as ASCII: an error message quoting a string UTF-8 cannot encode is no 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem},
    413: {"model": Problem},
    422: {"model": Problem},
}
"""The error responses a route declares in the schema (its ``responses=``)."""


class ApiError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        self.status, self.detail, self.field = status, detail, field


async def api_error(_: Request, exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        Problem(detail=exc.detail, field=exc.field).model_dump(), exc.status, headers=headers
    )


async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
    return JSONResponse(Problem(detail=str(exc), field=exc.field).model_dump(), exc.status)


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":  # its loc is a character position, not a field
        where = "body"
        message = f"not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})"
    else:
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        where = where or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
    return JSONResponse(Problem(detail=f"{where}: {message}", field=where).model_dump(), 422)


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # 400 is Starlette's "error parsing the body" (not JSON, not UTF-8)
    where = "body" if exc.status_code == 400 else None
    return JSONResponse(Problem(detail=str(exc.detail), field=where).model_dump(), exc.status_code)
