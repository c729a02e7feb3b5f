"""AsyncLLMEngine: the step loop in its own thread, asyncio callers beside it.

Callers on the event loop never touch the engine directly: `add`/`abort` go through a
command queue that the engine thread drains between steps, so a long step never blocks the
event loop and the engine stays single-threaded. Each request streams its outputs through
its own asyncio.Queue. A caller that stops iterating (a client that went away) aborts its
request, which frees its blocks at the next step boundary.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from titaninfer.engine.engine import EngineStats, LLMEngine
from titaninfer.types import RequestOutput, SamplingParams

logger = logging.getLogger(__name__)


class EngineDeadError(RuntimeError):
    """The engine thread crashed; no request can be served any more."""


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def put(self, item: RequestOutput | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._commands: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._dead: BaseException | None = None
        # Futures of queued commands, so a crashed engine thread can fail them (else their
        # callers would wait forever).
        self._pending: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()
        self._thread = threading.Thread(target=self._run, name="titaninfer-engine", daemon=True)
        self._stats = engine.stats()
        self._thread.start()

    # ------------------------------------------------------------------ caller side
    @property
    def num_active(self) -> int:
        return len(self._streams)

    def stats(self) -> EngineStats:
        """A snapshot taken by the engine thread after its latest step."""
        return self._stats

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the engine thread between steps; returns its result or raises its error."""
        if self._dead is not None:
            raise EngineDeadError(f"engine stopped: {self._dead!r}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as e:  # delivered to the caller, engine keeps running
                loop.call_soon_threadsafe(_set_exception, fut, e)
            else:
                loop.call_soon_threadsafe(_set_result, fut, result)

        entry = (loop, fut)
        self._pending.add(entry)
        try:
            self._commands.put(run)
            self._wakeup.set()
            if self._dead is not None:  # died before it could see the command
                raise EngineDeadError(f"engine stopped: {self._dead!r}")
            return await fut
        finally:
            self._pending.discard(entry)

    async def generate(self, prompt: str | list[int], params: SamplingParams, request_id: str,
                       priority: int = 0, cache_salt: str | None = None) -> AsyncIterator[RequestOutput]:
        """Queue a request and yield its outputs until it finishes. Raises ValueError for
        invalid input before anything is yielded."""
        stream = _Stream(asyncio.get_running_loop())
        if request_id in self._streams:
            raise ValueError(f"duplicate request id {request_id!r}")
        self._streams[request_id] = stream

        def add() -> None:
            self.engine.add_request(prompt, params, request_id=request_id, priority=priority,
                                    cache_salt=cache_salt)

        finished = False
        try:
            await self._call(add)
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                # Cancelled, client gone, or an error: free the request's blocks.
                self._commands.put(lambda: self.engine.abort(request_id))
                self._wakeup.set()

    async def abort(self, request_id: str) -> None:
        def run() -> None:
            final = self.engine.abort(request_id)
            # The request's generate() waits on its stream: hand it the final (aborted)
            # output, or it would wait forever.
            stream = self._streams.get(request_id)
            if final is not None and stream is not None:
                stream.put(final)

        await self._call(run)

    async def call(self, fn: Callable[[LLMEngine], Any]) -> Any:
        """Run fn(engine) on the engine thread (e.g. tokenization that must not race a step)."""
        return await self._call(lambda: fn(self.engine))

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ engine thread
    def _drain_commands(self) -> None:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            cmd()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain_commands()
                if not self.engine.has_unfinished_requests():
                    self._stats = self.engine.stats()
                    self._wakeup.wait(0.5)
                    self._wakeup.clear()
                    continue
                outputs = self.engine.step()
                self._stats = self.engine.stats()
                for out in outputs:
                    stream = self._streams.get(out.request_id)
                    if stream is not None:
                        stream.put(out)
        except BaseException as e:  # a bug: fail every open request loudly rather than hang
            logger.exception("engine thread crashed")
            self._dead = e
            for stream in list(self._streams.values()):
                stream.put(EngineDeadError(f"engine stopped: {e!r}"))
            for loop, fut in list(self._pending):
                loop.call_soon_threadsafe(_set_exception, fut, EngineDeadError(f"engine stopped: {e!r}"))


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
