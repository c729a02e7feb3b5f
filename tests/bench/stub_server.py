"""A tiny OpenAI-compatible streaming server with known timing, for testing the client.

Every completion streams `max_tokens` chunks: the first TTFT_S after the request arrives,
then one every ITL_S. It records what it received and the most requests in flight."""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

TTFT_S = 0.20
ITL_S = 0.06


class StubServer:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = int(body["max_tokens"])
        # Like vLLM, odd requests end with finish_reason on the last token's chunk; like
        # llama.cpp, even ones send an extra empty-text chunk that carries only finish_reason.
        separate_end = len(self.bodies) % 2 == 0
        await asyncio.sleep(TTFT_S)
        for i in range(n):
            last = i == n - 1
            reason = "length" if last and not separate_end else None
            await resp.write(self._chunk(body, f" t{i}", reason))
            if not last:
                await asyncio.sleep(ITL_S)
        if separate_end:
            await resp.write(self._chunk(body, "", "length"))
        usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": n}}
        await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        self.in_flight -= 1
        await resp.write_eof()
        return resp

    @staticmethod
    def _chunk(body: dict, text: str, reason: str | None) -> bytes:
        chunk = {"id": "c", "object": "text_completion", "model": body["model"],
                 "choices": [{"index": 0, "text": text, "finish_reason": reason}]}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> StubServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
