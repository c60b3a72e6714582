"""What keeps one request, or one job, from reaching the agent's own state.

``check_job_paths`` refuses a job whose working directory or log file lies
inside the agent's state (its directory, the store and its -wal/-shm, the
token file): a job writing its stdout to ``tokens.toml`` or reading it back
through ``GET /jobs/{id}/log`` would hand out every token. Paths are compared
after resolving symlinks of what exists (``os.path.realpath``). The engine
expands ``{id}``, ``{index}`` and ``{array_id}`` in log paths when the job
starts (an empty string for ``{index}`` of a job outside an array): so a
placeholder is accepted only in the file name, never in the directory part,
which is therefore fixed at submit and checked here as it will be used.

``BodyLimit`` answers 413 to a body larger than ``max_body_bytes`` before
the body is parsed: a ``Content-Length`` over the limit at once, a chunked
body as soon as its bytes pass it. ``SafeJSONResponse`` writes JSON as
ASCII, so a string the JSON parser let through but UTF-8 cannot encode (a
lone surrogate such as ``"\\ud800"``) is escaped rather than a 500;
``listing_response`` writes a long listing the same way, item by item, so
that no one call holds the GIL (and the scheduling loop) for long.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from htcsim.agent.api.errors import ApiError
from htcsim.agent.config import AgentConfig

PLACEHOLDER = re.compile(r"\{(id|index|array_id)\}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def protected_paths(config: AgentConfig) -> tuple[str, ...]:
    """The real paths a job may not use or point into.

    Resolved once per agent's settings, not on every submission (a realpath is
    a system call per component of each path): the agent creates its state
    directory, 0700 and its own, before it serves, and those paths are fixed
    for its life. A job's own paths are resolved on every request."""
    found = _RESOLVED.get(id(config))
    if found is None:
        db = config.db_path
        paths = [config.state_dir, db, db.with_name(db.name + "-wal")]
        paths += [db.with_name(db.name + "-shm"), config.tokens_path]
        found = _RESOLVED[id(config)] = (config, tuple(os.path.realpath(p) for p in paths))
    return found[1]


_RESOLVED: dict[int, tuple[AgentConfig, tuple[str, ...]]] = {}
"""id of an agent's settings -> (those settings, kept so that the id is not reused; roots)."""


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def check_job_paths(
    config: AgentConfig, cwd: str, stdout: str, stderr: str, prefix: str = ""
) -> None:
    """ApiError 422 naming the field if the job's cwd or a log path (as the engine
    will expand it) resolves inside the agent's state."""
    roots = protected_paths(config)
    where = f"{prefix}cwd"
    if _SURROGATE.search(cwd):
        raise ApiError(422, f"{where}: not a valid path (an unpaired surrogate)", where)
    if _inside(os.path.realpath(cwd), roots):
        raise ApiError(422, f"{where}: {cwd} is inside the agent's state directory", where)
    for key, pattern in (("stdout", stdout), ("stderr", stderr)):
        where = f"{prefix}{key}"
        if _SURROGATE.search(pattern):
            raise ApiError(422, f"{where}: not a valid path (an unpaired surrogate)", where)
        if not pattern:
            continue  # <cwd>/htcsim-{id}.out: cwd is checked
        directory, name = os.path.split(pattern)
        if PLACEHOLDER.search(directory):
            raise ApiError(
                422,
                f"{where}: {{id}}, {{index}} and {{array_id}} may appear in the file name "
                f"only, not in the directory ({pattern})",
                where,
            )
        full = os.path.join(cwd, pattern)  # an absolute pattern stays as it is
        if not name:
            raise ApiError(422, f"{where}: names a directory, not a file ({pattern})", where)
        sample = os.path.join(os.path.dirname(full), PLACEHOLDER.sub("0", name))
        for candidate in (os.path.dirname(full), full, sample):
            if _inside(os.path.realpath(candidate), roots):
                raise ApiError(
                    422, f"{where}: {pattern} is inside the agent's state directory", where
                )


def has_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string UTF-8 cannot encode."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_surrogate(v) for v in value)
    return False


class SafeJSONResponse(JSONResponse):
    """JSON as ASCII: any string the store holds can be written (never a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, indent=None, separators=(",", ":")
        ).encode("ascii")


def listing_response(key: str, items: Sequence[Any], **fields: Any) -> Response:
    """``{key: items, **fields}`` as SafeJSONResponse writes it, item by item.

    Why: a page of 10,000 jobs is megabytes of JSON, and one encoder call holds
    the GIL until it is done (tens of milliseconds), stalling the scheduling
    loop's thread; between items the interpreter lets other threads run. And
    FastAPI's own encoding of a returned dict walks every value in Python, ten
    times slower: a listing returns this response instead (the route declares
    its ``response_model`` for the schema)."""
    rest = _dumps(fields)[1:]  # '}', or '"next":5}'
    body = f"{{{_dumps(key)}:[{','.join([_dumps(item) for item in items])}]"
    body += rest if rest == "}" else "," + rest
    return Response(body.encode("ascii"), media_type="application/json")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413, unparsed."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit  # read when a request comes (the app is built before the engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._refuse(send, "Content-Length is not a number", 400)
                    return
                if length > limit:
                    await self._too_large(send, limit)
                    return
        # read the body here (chunked or not), counting, before the app parses it
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, limit: int) -> None:
        await self._refuse(send, f"the request body is larger than {limit} bytes", 413)

    async def _refuse(self, send: Send, detail: str, status: int) -> None:
        body = json.dumps({"detail": detail, "field": "body"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
