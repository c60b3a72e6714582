"""The REST API (FastAPI): thin handlers that read the store and send commands.

Why thin: no scheduling rule may live here. A handler checks the request
(schemas), finds who is calling (auth), then either reads (the store through
its own connection, the kernel's queries under the kernel lock, in a worker
thread so the event loop keeps answering) or hands a command to the
scheduling loop and awaits its answer, which comes once the change is
durable.

``create_app`` builds one agent's app: the engine, the token file, the
store's readers and the shadow runner go on ``app.state``, where the
dependencies (``deps``) find them; the error handlers (``errors``) turn
every refusal into a Problem body; the routers (``routes``, one per
resource) are included in ``ROUTERS`` order, the order of the schema's paths.
"""

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from htcsim.agent.api.auth import Tokens
from htcsim.agent.api.deps import Readers
from htcsim.agent.api.errors import ApiError, api_error, engine_error, http_error, invalid_request
from htcsim.agent.api.guards import BodyLimit, SafeJSONResponse
from htcsim.agent.api.idempotency import Idempotency
from htcsim.agent.api.routes import agent, cluster, jobs, metrics, nodes, policy, shadow, workflows
from htcsim.agent.api.submit_lane import SubmitLane
from htcsim.agent.engine.loop import Engine, EngineError
from htcsim.agent.shadow.runner import ShadowRunner

ROUTERS: tuple[APIRouter, ...] = (
    agent.router,
    jobs.router,
    workflows.router,
    nodes.router,
    cluster.router,
    policy.router,
    shadow.router,
    metrics.router,
)
"""Every resource's router, in the order of the paths in the published schema."""


def create_app(
    engine: Engine,
    tokens: Tokens,
    shadow: ShadowRunner | None = None,
    *,
    submit_lane: bool = True,
) -> FastAPI:
    """The API of one agent (``shadow``: its shadow-mode twin, if it runs one).
    ``submit_lane``: plain ``POST /jobs`` requests take ``SubmitLane`` (False: the
    route answers every one, as the reference the lane is compared with)."""
    app = FastAPI(
        title="htcsim agent",
        description="Submit, watch and control jobs scheduled by htcsim's kernel.",
        version="1",
        default_response_class=SafeJSONResponse,
    )
    if submit_lane:
        app.add_middleware(SubmitLane)  # inside BodyLimit: the last added is the outermost
    app.add_middleware(BodyLimit, limit=lambda: engine.config.max_body_bytes)
    app.state.engine = engine
    app.state.tokens = tokens
    app.state.readers = Readers(engine.config.db_path)
    app.state.shadow = shadow
    app.state.idempotency = Idempotency(engine.config, app.state.readers.get)
    app.exception_handler(ApiError)(api_error)
    app.exception_handler(EngineError)(engine_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(StarletteHTTPException)(http_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
