"""`build_app(async_engine, config)`: the FastAPI app in front of one AsyncLLMEngine.

Middleware, outermost first (each is plain ASGI, so streaming and disconnect detection pass
through untouched):
    RequestLog    one log line per request, and the per-route HTTP counter
    DrainGate     503 once SIGTERM started a drain; counts requests in flight
    BearerAuth    401 without the right key (only when a key is configured)
    BodySizeLimit 413 over --max-body-bytes
then FastAPI's routing, whose error handlers (errors.py) give every failure OpenAI's shape.

The app does not own the engine: whoever built the AsyncLLMEngine shuts it down (runner.py
does, after draining), so several apps (tests) can share one engine.
"""

from __future__ import annotations

from fastapi import FastAPI

from titaninfer import __version__
from titaninfer.engine.async_engine import AsyncLLMEngine
from titaninfer.server import routes_misc, routes_openai
from titaninfer.server.auth import BearerAuth
from titaninfer.server.config import ServerConfig
from titaninfer.server.errors import install_error_handlers
from titaninfer.server.limits import BodySizeLimit, DrainGate
from titaninfer.server.request_log import RequestLog
from titaninfer.server.state import ServerState


def build_app(async_engine: AsyncLLMEngine, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    state = ServerState.create(async_engine, config)
    app = FastAPI(title="TitanInfer", version=__version__,
                  description="OpenAI-compatible API of the TitanInfer inference engine.")
    app.state.titaninfer = state
    app.include_router(routes_openai.router)
    app.include_router(routes_misc.router)
    install_error_handlers(app)

    known = {getattr(r, "path", None) for router in (routes_openai.router, routes_misc.router)
             for r in router.routes}

    def count(path: str, status: int) -> None:
        # Unknown paths share one label: a scanner must not grow the metric without bound.
        state.metrics.http.labels(path if path in known else "other", str(status)).inc()

    # add_middleware wraps what is there, so the last one added is the outermost.
    app.add_middleware(BodySizeLimit, max_body_bytes=config.max_body_bytes)
    if config.api_key:
        app.add_middleware(BearerAuth, api_key=config.api_key)
    app.add_middleware(DrainGate, state=state.drain)
    app.add_middleware(RequestLog, on_done=count)
    return app
