"""From a validated request body to engine inputs: the server-side limits (max_tokens,
n, stop strings, context length) and the `SamplingParams` to run with.

Every failure here is the client's: an `APIError` with status 400 naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from titaninfer.server.config import ServerConfig
from titaninfer.server.errors import bad_request
from titaninfer.server.protocol import ChatCompletionRequest, CompletionRequest, _SamplingFields
from titaninfer.types import SamplingParams

_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True)
class ModelLimits:
    max_model_len: int
    vocab_size: int
    kv_capacity_tokens: int  # the whole KV pool: no request can need more


def check_request(req: _SamplingFields, cfg: ServerConfig) -> None:
    """Checks that need no tokenization."""
    if req.n > cfg.max_n:
        raise bad_request(f"n must be at most {cfg.max_n}, got {req.n}", "n")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stops) > cfg.max_stop_strings:
        raise bad_request(f"at most {cfg.max_stop_strings} stop strings are allowed, got {len(stops)}", "stop")
    for s in stops:
        if not s:
            raise bad_request("stop strings must not be empty", "stop")
        if len(s) > cfg.max_stop_len:
            raise bad_request(f"stop strings must be at most {cfg.max_stop_len} characters long", "stop")
    if req.logit_bias:
        raise bad_request("logit_bias is not supported", "logit_bias")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")
    requested = requested_max_tokens(req)
    if requested is not None and requested > cfg.max_tokens_limit:
        raise bad_request(f"max_tokens must be at most {cfg.max_tokens_limit}, got {requested}",
                          "max_completion_tokens" if getattr(req, "max_completion_tokens", None) else "max_tokens")
    if req.min_tokens and requested is not None and req.min_tokens > requested:
        raise bad_request("min_tokens must not exceed max_tokens", "min_tokens")
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise bad_request("echo is not supported", "echo")
        if req.suffix:
            raise bad_request("suffix is not supported", "suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise bad_request("best_of must equal n (best-of sampling is not supported)", "best_of")
    if isinstance(req, ChatCompletionRequest):
        if req.tools:
            raise bad_request("tools are not supported", "tools")
        if req.top_logprobs and not req.logprobs:
            raise bad_request("top_logprobs needs logprobs set to true", "top_logprobs")
        fmt = (req.response_format or {}).get("type", "text")
        if fmt != "text":
            raise bad_request("only response_format {'type': 'text'} is supported", "response_format")


def requested_max_tokens(req: _SamplingFields) -> int | None:
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        return req.max_completion_tokens
    return req.max_tokens


def resolve_max_tokens(req: _SamplingFields, prompt_len: int, limits: ModelLimits,
                       cfg: ServerConfig) -> int:
    """The max_tokens to run with: the client's, which must fit in the context with the
    prompt; or a default that fits (completions 16, chat the rest of the context and of the
    KV pool), capped at --max-tokens-limit."""
    room = limits.max_model_len - prompt_len
    if room < 1:
        raise bad_request(f"the prompt has {prompt_len} tokens but the model's context is "
                          f"{limits.max_model_len} tokens", "messages" if isinstance(req, ChatCompletionRequest)
                          else "prompt", code="context_length_exceeded")
    requested = requested_max_tokens(req)
    if requested is None:
        # A default must never be the reason a request fails: it also fits the KV pool.
        default = _COMPLETIONS_DEFAULT_MAX_TOKENS if isinstance(req, CompletionRequest) else room
        kv_room = limits.kv_capacity_tokens - prompt_len
        return max(1, min(default, room, kv_room, cfg.max_tokens_limit))
    if prompt_len + requested > limits.max_model_len:
        raise bad_request(f"the prompt ({prompt_len} tokens) plus max_tokens ({requested}) exceeds the "
                          f"model's context of {limits.max_model_len} tokens", "max_tokens",
                          code="context_length_exceeded")
    return requested


def build_params(req: _SamplingFields, max_tokens: int, limits: ModelLimits) -> SamplingParams:
    if isinstance(req, ChatCompletionRequest):
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
    else:
        assert isinstance(req, CompletionRequest)
        logprobs = req.logprobs
    if req.stop_token_ids and max(req.stop_token_ids) >= limits.vocab_size:
        raise bad_request(f"stop_token_ids must be below the vocabulary size {limits.vocab_size}", "stop_token_ids")
    try:
        return SamplingParams(
            n=req.n,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=0 if req.top_k is None else req.top_k,
            min_p=req.min_p or 0.0,
            repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            seed=req.seed,
            max_tokens=max_tokens,
            min_tokens=min(req.min_tokens, max_tokens),
            stop=req.stop,
            stop_token_ids=req.stop_token_ids,
            ignore_eos=req.ignore_eos,
            include_stop_str_in_output=req.include_stop_str_in_output,
            logprobs=logprobs,
            skip_special_tokens=req.skip_special_tokens,
        )
    except ValueError as e:
        raise bad_request(str(e)) from None
