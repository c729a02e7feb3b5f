"""Running the app under uvicorn, and stopping it gracefully.

SIGTERM (or Ctrl-C) starts a drain instead of uvicorn's immediate shutdown:
    1. the DrainGate answers every new request with 503 (connections are still accepted,
       so clients get an answer rather than a refused connection);
    2. requests in flight run to completion, for up to --drain-timeout seconds;
    3. whatever is still running then is aborted (streams end with finish_reason "abort");
    4. uvicorn shuts down, the engine thread stops, block accounting is checked.
A second signal stops at once. The process exits 0 after a clean drain.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from types import FrameType

import uvicorn

from titaninfer.engine.async_engine import AsyncLLMEngine
from titaninfer.server.app import build_app
from titaninfer.server.config import ServerConfig
from titaninfer.server.state import ServerState

logger = logging.getLogger("titaninfer.server")

_ABORT_GRACE_S = 5.0  # after aborting, time for the aborted responses to reach their clients


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout_s = drain_timeout_s
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only set flags here; on_tick starts the drain on the loop.
        # (Not calling super() also keeps uvicorn from re-raising the signal at exit, which
        # would turn a clean drain into death by SIGTERM.)
        if self._drain_requested:
            self.should_exit = True
            self.force_exit = True
        self._drain_requested = True

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"titaninfer serve: ready on http://{host}:{port} (model {self.state.model_name})",
                  file=sys.stderr, flush=True)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        return await super().on_tick(counter)

    async def _drain(self) -> None:
        drain = self.state.drain
        drain.draining = True
        logger.warning("draining: %d requests in flight, up to %.0f s", drain.in_flight, self.drain_timeout_s)
        if not await drain.wait_idle(self.drain_timeout_s):
            ids = self.state.admission.engine_ids()
            logger.warning("drain timeout: aborting %d engine requests", len(ids))
            for rid in ids:
                await self.state.engine.abort(rid)
            await drain.wait_idle(_ABORT_GRACE_S)
        self.should_exit = True


def run_server(async_engine: AsyncLLMEngine, config: ServerConfig, log_level: str = "info") -> int:
    """Serve until a signal ends the drain; returns the process exit code."""
    app = build_app(async_engine, config)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level.lower(),
                               access_log=False,  # request_log.py writes one line per request
                               timeout_graceful_shutdown=5, lifespan="off")
    server = DrainingServer(uv_config, app.state.titaninfer, config.drain_timeout_s)
    try:
        server.run()
    except SystemExit:  # uvicorn could not start (it logged why, e.g. the port is taken)
        return 2
    finally:
        async_engine.shutdown()
    try:
        async_engine.engine.check_block_accounting()
    except AssertionError as e:
        logger.error("KV block accounting is broken at exit: %s", e)
        return 1
    logger.warning("stopped")
    return 0
