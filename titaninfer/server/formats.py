"""Response bodies of /v1/completions and /v1/chat/completions, whole and streamed.

The serving loop (serving.py) is the same for both endpoints; only the shapes differ, and
they live here: `CompletionFormat` ("text_completion", `text`, completions logprobs) and
`ChatFormat` ("chat.completion", `message` / `delta`, chat logprobs, a first chunk that
announces the assistant role).
"""

from __future__ import annotations

from typing import Any, Protocol

from titaninfer.server.logprobs import TokenTexts, chat_logprobs, completion_logprobs
from titaninfer.types import TokenLogprobs


class ResponseFormat(Protocol):
    object_name: str
    chunk_object_name: str

    def choice(self, index: int, text: str, lps: list[TokenLogprobs] | None, finish_reason: str | None,
               stop_reason: int | str | None) -> dict[str, Any]: ...

    def start_delta(self, index: int) -> dict[str, Any] | None: ...

    def delta(self, index: int, text: str, lps: list[TokenLogprobs] | None, text_offset: int,
              finish_reason: str | None, stop_reason: int | str | None) -> dict[str, Any]: ...


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def envelope(fmt_object: str, response_id: str, created: int, model: str,
             choices: list[dict[str, Any]], usage_body: dict[str, int] | None) -> dict[str, Any]:
    return {"id": response_id, "object": fmt_object, "created": created, "model": model,
            "choices": choices, "usage": usage_body}


class CompletionFormat:
    object_name = "text_completion"
    chunk_object_name = "text_completion"

    def __init__(self, texts: TokenTexts, want_logprobs: bool) -> None:
        self._texts = texts
        self._want = want_logprobs

    def _lp(self, lps: list[TokenLogprobs] | None, offset: int) -> dict[str, Any] | None:
        if not self._want:
            return None
        return completion_logprobs(self._texts, lps or [], offset)

    def choice(self, index: int, text: str, lps: list[TokenLogprobs] | None, finish_reason: str | None,
               stop_reason: int | str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": self._lp(lps, 0),
                "finish_reason": finish_reason, "stop_reason": stop_reason}

    def start_delta(self, index: int) -> dict[str, Any] | None:
        return None

    def delta(self, index: int, text: str, lps: list[TokenLogprobs] | None, text_offset: int,
              finish_reason: str | None, stop_reason: int | str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": self._lp(lps, text_offset),
                "finish_reason": finish_reason, "stop_reason": stop_reason}


class ChatFormat:
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"

    def __init__(self, texts: TokenTexts, want_logprobs: bool) -> None:
        self._texts = texts
        self._want = want_logprobs

    def _lp(self, lps: list[TokenLogprobs] | None) -> dict[str, Any] | None:
        return chat_logprobs(self._texts, lps or []) if self._want else None

    def choice(self, index: int, text: str, lps: list[TokenLogprobs] | None, finish_reason: str | None,
               stop_reason: int | str | None) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": text},
                "logprobs": self._lp(lps), "finish_reason": finish_reason, "stop_reason": stop_reason}

    def start_delta(self, index: int) -> dict[str, Any] | None:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}

    def delta(self, index: int, text: str, lps: list[TokenLogprobs] | None, text_offset: int,
              finish_reason: str | None, stop_reason: int | str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"index": index, "delta": {"content": text} if text else {},
                                "logprobs": self._lp(lps) if lps else None, "finish_reason": finish_reason}
        if finish_reason is not None:
            body["stop_reason"] = stop_reason
        return body
