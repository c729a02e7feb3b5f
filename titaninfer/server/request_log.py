"""One log line per HTTP request, written when its response is complete (streams included).

`RequestLog` (ASGI middleware) puts a `RequestRecord` in the scope; generation routes fill
in the request id, token counts, time to first token and finish reason; the middleware adds
the status and duration and logs one line. Prompt text appears only with --log-prompts:
prompts are user data and do not belong in logs by default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("titaninfer.server.requests")

_SCOPE_KEY = "titaninfer.request_record"


@dataclass
class RequestRecord:
    request_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    finish: str | None = None  # stop, length, abort, disconnected, error, ...
    prompt: str | None = None  # only filled with --log-prompts


def record_of(request: Request) -> RequestRecord:
    """The record of this request (a throwaway one when the middleware is not installed)."""
    record = request.scope.get(_SCOPE_KEY)
    return record if isinstance(record, RequestRecord) else RequestRecord()


def format_line(method: str, path: str, status: int | None, duration_s: float,
                record: RequestRecord) -> str:
    parts = [f"id={record.request_id or '-'}", f"{method} {path}", f"status={status or '-'}"]
    if record.prompt_tokens is not None:
        parts.append(f"prompt_tokens={record.prompt_tokens}")
    if record.completion_tokens is not None:
        parts.append(f"completion_tokens={record.completion_tokens}")
    if record.ttft_s is not None:
        parts.append(f"ttft_ms={record.ttft_s * 1e3:.1f}")
    parts.append(f"duration_ms={duration_s * 1e3:.1f}")
    if record.finish is not None:
        parts.append(f"finish={record.finish}")
    if record.prompt is not None:
        parts.append(f"prompt={record.prompt}")  # already repr(): one line, escaped
    return " ".join(parts)


class RequestLog:
    def __init__(self, app: ASGIApp, on_done: Callable[[str, int], None] | None = None) -> None:
        self.app = app
        self.on_done = on_done  # (path, status): e.g. a metrics counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord()
        scope[_SCOPE_KEY] = record
        status: int | None = None
        start = time.monotonic()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if record.finish is None and status is None:
                record.finish = "disconnected"
            path = scope.get("path", "-")
            logger.info(format_line(scope.get("method", "-"), path, status, time.monotonic() - start, record))
            if self.on_done is not None:
                self.on_done(path, status or 499)
