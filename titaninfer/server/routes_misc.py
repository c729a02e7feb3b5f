"""Routes beside the OpenAI ones: /tokenize and /detokenize (vLLM's shapes), /health,
/version and /metrics (Prometheus text format).

/health proves the engine thread is alive and taking commands (a no-op runs on it between
steps), and answers 503 while the server drains or when the engine is gone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from titaninfer import __version__
from titaninfer.engine.async_engine import EngineDeadError
from titaninfer.server.errors import bad_request
from titaninfer.server.metrics import CONTENT_TYPE
from titaninfer.server.protocol import (
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)
from titaninfer.server.state import get_state

router = APIRouter()

_HEALTH_TIMEOUT_S = 10.0  # one engine step on a busy CPU can take seconds


@router.post("/tokenize")
async def tokenize(body: TokenizeCompletionRequest | TokenizeChatRequest, request: Request) -> dict[str, Any]:
    state = get_state(request)
    state.check_model(body.model)
    tok = state.require_tokenizer("prompt")
    if isinstance(body, TokenizeChatRequest):
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]

        def run() -> list[int]:
            return tok.encode_chat(messages, add_generation_prompt=body.add_generation_prompt)
    else:
        prompt, special = body.prompt, body.add_special_tokens

        def run() -> list[int]:
            return tok.encode(prompt, add_special_tokens=special)
    try:
        ids = await anyio.to_thread.run_sync(run)
    except ValueError as e:
        raise bad_request(str(e)) from None
    return {"count": len(ids), "max_model_len": state.limits.max_model_len, "tokens": ids,
            "token_strs": None}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    state = get_state(request)
    state.check_model(body.model)
    tok = state.require_tokenizer("tokens")
    try:
        text = await anyio.to_thread.run_sync(lambda: tok.decode(body.tokens))
    except ValueError as e:
        raise bad_request(str(e), "tokens") from None
    return {"prompt": text}


@router.get("/health")
async def health(request: Request) -> Response:
    state = get_state(request)
    if state.drain.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        await asyncio.wait_for(state.engine.call(lambda _: None), _HEALTH_TIMEOUT_S)
    except EngineDeadError:
        return JSONResponse({"status": "engine_dead"}, status_code=503)
    except asyncio.TimeoutError:
        return JSONResponse({"status": "engine_not_responding"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE)
