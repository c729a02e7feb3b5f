"""OpenAI routes: /v1/models, /v1/completions, /v1/chat/completions.

Each generation route validates its body (protocol.py, sampling.py), tokenizes off the
event loop (a long prompt or a chat template must not stall other clients), builds a `Job`
and hands it to serving.serve.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response

from titaninfer.server.errors import bad_request
from titaninfer.server.formats import ChatFormat, CompletionFormat
from titaninfer.server.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest
from titaninfer.server.sampling import build_params, check_request, resolve_max_tokens
from titaninfer.server.serving import Job, serve
from titaninfer.server.state import ServerState, get_state

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = get_state(request)
    return {"object": "list", "data": [{
        "id": state.model_name, "object": "model", "created": state.created, "owned_by": "titaninfer",
        "root": state.model_name, "max_model_len": state.limits.max_model_len}]}


async def _off_loop(fn: Any, *args: Any) -> Any:
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except ValueError as e:  # the tokenizer or the chat template refused the input
        raise bad_request(str(e)) from None


def _prompt_list(prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [list(prompt)]
    return list(prompt)


def _encode_all(tokenizer: Any, prompts: list[str | list[int]]) -> list[list[int]]:
    return [tokenizer.encode(p) if isinstance(p, str) else p for p in prompts]


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    state = get_state(request)
    state.check_model(body.model)
    check_request(body, state.config)
    raw = _prompt_list(body.prompt)
    tokenizer = state.require_tokenizer("prompt") if any(isinstance(p, str) for p in raw) else None
    prompts = await _off_loop(_encode_all, tokenizer, raw)
    if any(not p for p in prompts):
        raise bad_request("the prompt is empty", "prompt")
    max_tokens = resolve_max_tokens(body, max(len(p) for p in prompts), state.limits, state.config)
    job = Job("cmpl", prompts, build_params(body, max_tokens, state.limits),
              CompletionFormat(state.token_texts, body.logprobs is not None), stream=body.stream,
              include_usage=bool(body.stream_options and body.stream_options.include_usage),
              priority=body.priority, prompt_text=_log_text(state, raw))
    return await serve(request, state, job)


def _messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text()} for m in messages]


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    state.check_model(body.model)
    check_request(body, state.config)
    tokenizer = state.require_tokenizer("messages")
    messages = _messages(body.messages)
    ids = await _off_loop(lambda: tokenizer.encode_chat(messages, add_generation_prompt=body.add_generation_prompt))
    if not ids:
        raise bad_request("the rendered chat prompt is empty", "messages")
    max_tokens = resolve_max_tokens(body, len(ids), state.limits, state.config)
    job = Job("chatcmpl", [ids], build_params(body, max_tokens, state.limits),
              ChatFormat(state.token_texts, body.logprobs), stream=body.stream,
              include_usage=bool(body.stream_options and body.stream_options.include_usage),
              priority=body.priority, prompt_text=_log_text(state, messages))
    return await serve(request, state, job)


def _log_text(state: ServerState, prompt: Any) -> str | None:
    if not state.config.log_prompts:
        return None
    text = repr(prompt)
    return text if len(text) <= 2000 else text[:2000] + "..."
