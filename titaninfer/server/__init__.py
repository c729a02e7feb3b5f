"""The OpenAI-compatible HTTP front: FastAPI routes over an AsyncLLMEngine.

    build_app(async_engine, config) -> FastAPI     app.py
    run_server(async_engine, config)               runner.py (uvicorn, graceful SIGTERM drain)
    `titaninfer serve`                             cli.py

Imports stay lazy here so `titaninfer.server.cli` can register its subcommand without
pulling in FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from titaninfer.server.app import build_app
    from titaninfer.server.config import ServerConfig

__all__ = ["ServerConfig", "build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from titaninfer.server.app import build_app

        return build_app
    if name == "ServerConfig":
        from titaninfer.server.config import ServerConfig

        return ServerConfig
    raise AttributeError(name)
