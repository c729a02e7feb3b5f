"""50 concurrent streaming clients get exactly the tokens each prompt gets alone: nothing
lost, duplicated or mixed up between streams."""

from __future__ import annotations

import asyncio
from typing import Any

from .helpers import ServerProcess

NUM_CLIENTS = 50
PROMPTS = [f"Write one sentence about the number {i}." for i in range(10)]
KW: dict[str, Any] = dict(max_tokens=16, temperature=0, extra_body={"ignore_eos": True})


async def _stream(client: Any, model: str, prompt: str) -> tuple[str, list[str | None], Any]:
    text, finishes, usage = "", [], None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True,
        stream_options={"include_usage": True}, **KW)
    async for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            assert c.index == 0
            text += c.delta.content or ""
            if c.finish_reason is not None:
                finishes.append(c.finish_reason)
    return text, finishes, usage


async def _all(url: str, model: str) -> list[tuple[str, list[str | None], Any]]:
    import openai

    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300.0) as c:
        return await asyncio.gather(*[_stream(c, model, PROMPTS[i % len(PROMPTS)]) for i in range(NUM_CLIENTS)])


def test_50_concurrent_streams_match_solo_runs(server: ServerProcess, client: Any, model_name: str) -> None:
    solo = {}
    for p in PROMPTS:
        r = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": p}], **KW)
        solo[p] = r.choices[0].message.content
        assert r.usage.completion_tokens == 16
    results = asyncio.run(_all(server.url, model_name))
    assert len(results) == NUM_CLIENTS
    for i, (text, finishes, usage) in enumerate(results):
        prompt = PROMPTS[i % len(PROMPTS)]
        assert finishes == ["length"], (i, finishes)
        assert usage is not None and usage.completion_tokens == 16
        assert text == solo[prompt], (i, prompt, text, solo[prompt])
