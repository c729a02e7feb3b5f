"""The async engine front and the app over a fake engine (no model): the paths a real model
does not reach on demand. `abort` must end its generate() and a crashed engine thread must
fail every waiter with a 503, never leave one hanging."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from titaninfer.engine.async_engine import AsyncLLMEngine, EngineDeadError
from titaninfer.engine.engine import EngineStats
from titaninfer.server.app import build_app
from titaninfer.types import CompletionOutput, RequestOutput, SamplingParams


class FakeEngine:
    """Each step appends one token 'x' to every request; optionally the step crashes."""

    def __init__(self, crash_after_steps: int | None = None, step_s: float = 0.01) -> None:
        self.tokenizer = None
        self.config = SimpleNamespace(model="fake", cache=SimpleNamespace(block_size=16),
                                      scheduler=SimpleNamespace(max_num_seqs=4))
        self.model_config = SimpleNamespace(vocab_size=100)
        self.max_model_len = 64
        self.requests: dict[str, int] = {}
        self.crash_after_steps = crash_after_steps
        self.step_s = step_s
        self.steps = 0

    def stats(self) -> EngineStats:
        return EngineStats(len(self.requests), 0, 0, 100, 0, 0.0, self.steps, 0, 0, 0, 0)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def add_request(self, prompt: Any, params: Any, request_id: str, priority: int = 0,
                    cache_salt: str | None = None) -> str:
        self.requests[request_id] = 0
        return request_id

    def _out(self, rid: str, n: int, finish: str | None) -> RequestOutput:
        return RequestOutput(rid, None, [1], [CompletionOutput(0, "x" * n, [7] * n, finish_reason=finish)],
                             finished=finish is not None)

    def step(self) -> list[RequestOutput]:
        time.sleep(self.step_s)
        self.steps += 1
        if self.crash_after_steps is not None and self.steps > self.crash_after_steps:
            raise RuntimeError("boom")
        for rid in self.requests:
            self.requests[rid] += 1
        return [self._out(rid, n, None) for rid, n in self.requests.items()]

    def abort(self, rid: str) -> RequestOutput | None:
        n = self.requests.pop(rid, None)
        return None if n is None else self._out(rid, n, "abort")


def test_abort_ends_the_generate_iterator() -> None:
    async def run() -> list[RequestOutput]:
        front = AsyncLLMEngine(FakeEngine())  # type: ignore[arg-type]
        try:
            outs = []
            async for out in front.generate([1], SamplingParams(), "r1"):
                outs.append(out)
                if len(outs) == 2:
                    await front.abort("r1")
            return outs
        finally:
            front.shutdown()

    outs = asyncio.run(asyncio.wait_for(run(), 10))
    assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"


def test_crashed_engine_fails_a_queued_call() -> None:
    async def run() -> None:
        front = AsyncLLMEngine(FakeEngine(crash_after_steps=0, step_s=0.3))  # type: ignore[arg-type]
        try:
            gen = front.generate([1], SamplingParams(), "r1")
            task = asyncio.ensure_future(gen.__anext__())
            await asyncio.sleep(0.1)  # the engine thread is inside the (crashing) step now
            with pytest.raises(EngineDeadError):
                await front.call(lambda e: None)
            with pytest.raises(EngineDeadError):
                await task
        finally:
            front.shutdown()

    asyncio.run(asyncio.wait_for(run(), 10))


async def _post_and_health(app: Any) -> tuple[httpx.Response, httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post("/v1/completions", json={"prompt": [1, 2], "max_tokens": 5})
        return r, await c.get("/health")


def test_app_over_a_crashing_engine_answers_503() -> None:
    front = AsyncLLMEngine(FakeEngine(crash_after_steps=1))  # type: ignore[arg-type]
    try:
        r, health = asyncio.run(asyncio.wait_for(_post_and_health(build_app(front)), 10))
    finally:
        front.shutdown()
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    assert health.status_code == 503 and health.json() == {"status": "engine_dead"}
