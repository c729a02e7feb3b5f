"""What the server lets in: body size (413), draining (503) and admission (429).

- `BodySizeLimit` (ASGI middleware) refuses a body over the limit, by Content-Length up
  front or by counting chunks as they arrive.
- `DrainGate` (ASGI middleware) counts HTTP requests in flight and, once draining has
  begun (SIGTERM), answers every new request with 503; /health says so too.
- `Admission` counts sequences in the engine: up to `max_running` run, at most
  `max_waiting` more may queue; beyond that a request gets 429 at once instead of waiting
  without bound. It also keeps each admitted request's engine ids, so a drain that runs out
  of time can abort what is left.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from titaninfer.server.errors import APIError, error_bytes


async def send_error(send: Send, status: int, message: str, *, code: str | None = None,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = error_bytes(status, message, code=code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; an HTTPException so FastAPI's body parser re-raises it
    instead of turning it into a generic 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, 400, "invalid Content-Length header")
                    return
                if declared > self.limit:
                    await send_error(send, 413, str(BodyTooLarge(self.limit).detail))
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await send_error(send, 413, str(e.detail))


@dataclass
class DrainState:
    draining: bool = False
    in_flight: int = 0  # HTTP requests past the gate and not yet answered
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when nothing is in flight (within the timeout)."""
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return self.in_flight == 0
        return True


class DrainGate:
    # Observability keeps working while draining; everything else is refused.
    _UNGATED = frozenset({"/metrics", "/health"})

    def __init__(self, app: ASGIApp, state: DrainState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._UNGATED:
            await self.app(scope, receive, send)
            return
        if self.state.draining:
            await send_error(send, 503, "the server is shutting down", code="server_draining",
                             headers=[(b"connection", b"close")])
            return
        self.state.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.leave()


@dataclass
class Ticket:
    """One admitted HTTP request: how many sequences it holds and its engine request ids."""

    num_seqs: int
    engine_ids: list[str] = field(default_factory=list)


class Admission:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.num_seqs = 0
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count()

    @property
    def capacity(self) -> int:
        return self.max_running + self.max_waiting

    def admit(self, num_seqs: int) -> tuple[int, Ticket]:
        """Reserve room for `num_seqs` sequences or raise APIError (429 when busy, 400 when
        the request could never fit)."""
        if num_seqs > self.capacity:
            raise APIError(400, f"the request needs {num_seqs} sequences (prompts x n) but the "
                           f"server holds at most {self.capacity}", param="n")
        if self.num_seqs + num_seqs > self.capacity:
            waiting = max(0, self.num_seqs - self.max_running)
            raise APIError(429, f"the server is busy: {waiting} sequences are waiting already "
                           f"(limit {self.max_waiting}); retry later", code="too_many_requests",
                           headers={"retry-after": "1"})
        self.num_seqs += num_seqs
        key = next(self._ids)
        ticket = Ticket(num_seqs)
        self._tickets[key] = ticket
        return key, ticket

    def release(self, key: int) -> None:
        ticket = self._tickets.pop(key, None)
        if ticket is not None:
            self.num_seqs -= ticket.num_seqs

    def engine_ids(self) -> list[str]:
        return [rid for t in self._tickets.values() for rid in t.engine_ids]
