"""Running one HTTP request's engine requests and merging their outputs.

A completions batch (several prompts) becomes one engine request per prompt; each streams
through its own `AsyncLLMEngine.generate` iterator, driven by its own task, into one merged
queue of (prompt index, cumulative RequestOutput). Cancelling the group cancels those tasks
synchronously; each task's `generate` then aborts its engine request, which frees its KV
blocks at the next step boundary. So a group that is closed early, for whatever reason
(client gone, error, server stopping), never leaves work behind in the engine.

`wait_watching_client` is how a request waits without a response in progress: it polls
`request.is_disconnected()` and cancels the group when the client went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from titaninfer.engine.async_engine import AsyncLLMEngine
from titaninfer.types import RequestOutput, SamplingParams

T = TypeVar("T")

_DONE = object()


class ClientGone(Exception):
    """The client disconnected before its response was complete."""


class GenerationGroup:
    def __init__(self, engine: AsyncLLMEngine, prompts: list[list[int]], params: SamplingParams,
                 engine_ids: list[str], priority: int = 0) -> None:
        assert len(prompts) == len(engine_ids)
        self.engine_ids = engine_ids
        self._queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self._pending = len(prompts)
        self._tasks = [asyncio.ensure_future(self._drive(engine, i, p, params, rid, priority))
                       for i, (p, rid) in enumerate(zip(prompts, engine_ids, strict=True))]
        self.finals: dict[int, RequestOutput] = {}

    async def _drive(self, engine: AsyncLLMEngine, index: int, prompt: list[int],
                     params: SamplingParams, request_id: str, priority: int) -> None:
        try:
            async for out in engine.generate(prompt, params, request_id, priority=priority):
                self._queue.put_nowait((index, out))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # handed to the consumer, who decides what it means
            self._queue.put_nowait((index, e))
        finally:
            self._queue.put_nowait((index, _DONE))

    async def next(self) -> tuple[int, RequestOutput] | None:
        """The next output of any prompt, or None once every prompt has finished. Raises the
        first error of any prompt (ValueError: the engine refused the input)."""
        while self._pending:
            index, item = await self._queue.get()
            if item is _DONE:
                self._pending -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            if item.finished:
                self.finals[index] = item
            return index, item
        return None

    def cancel(self) -> None:
        """Stop everything now (synchronous: safe inside a cancelled scope)."""
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        self.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_watching_client(request: Request, awaitable: Awaitable[T], poll_s: float) -> T:
    """Await `awaitable`, polling the client; on disconnect cancel it and raise ClientGone."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
