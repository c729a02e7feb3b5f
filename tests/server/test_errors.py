"""Bad input gets a 4xx with OpenAI's error body, never a 422 or a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

MSG = [{"role": "user", "content": "Hi"}]


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not None:  # a nested location may follow ("prompt.1", "messages.0.role")
        assert (body["error"]["param"] or "").startswith(param), body
    return body["error"]


BAD_COMPLETIONS = [
    ({"prompt": "x", "model": "no-such-model"}, "model"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_k": -2}, "top_k"),
    ({"prompt": "x", "presence_penalty": 5}, "presence_penalty"),
    ({"prompt": "x", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 9}, "n"),  # over --max-n 8
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 257}, "max_tokens"),  # over --max-tokens-limit 256
    ({"prompt": "x", "logprobs": 21}, "logprobs"),
    ({"prompt": "x", "seed": 2**64}, "seed"),
    ({"prompt": "x", "stop": ["s"] * 17}, "stop"),  # too many stop strings
    ({"prompt": "x", "stop": "s" * 257}, "stop"),  # too long
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": "x", "logit_bias": {"1": 5}}, "logit_bias"),
    ({"prompt": "x", "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"prompt": "x", "stop_token_ids": [10**6]}, "stop_token_ids"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [10**6]}, "prompt"),  # outside the vocabulary
    ({"prompt": [[1, 2], []]}, "prompt"),
    ({"prompt": {"text": "x"}}, "prompt"),
    ({}, "prompt"),
    ({"prompt": [100] * 8100, "max_tokens": 200}, "max_tokens"),  # prompt + max_tokens > context
    ({"prompt": [100] * 8192}, "prompt"),  # the prompt alone fills the context
]


@pytest.mark.parametrize(("body", "param"), BAD_COMPLETIONS, ids=lambda v: str(v)[:40])
def test_completions_bad_input_is_400(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    assert_error(http.post("/v1/completions", json=body), 400, param)


def test_context_errors_have_a_code(http: httpx.Client) -> None:
    err = assert_error(http.post("/v1/completions", json={"prompt": [100] * 8100, "max_tokens": 200}), 400)
    assert err["code"] == "context_length_exceeded"


BAD_CHATS = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None),
    ({"messages": "hello"}, "messages"),
    ({"messages": MSG, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": MSG, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"messages": MSG, "max_completion_tokens": 1000}, "max_completion_tokens"),
    ({"messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": MSG, "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": MSG, "model": 123}, "model"),
    ({"messages": [{"role": "user", "content": "x" * 40000}], "max_tokens": 1}, "messages"),  # over context
]


@pytest.mark.parametrize(("body", "param"), BAD_CHATS, ids=lambda v: str(v)[:40])
def test_chat_bad_input_is_400(http: httpx.Client, body: dict[str, Any], param: str | None) -> None:
    assert_error(http.post("/v1/chat/completions", json=body), 400, param)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"])
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_malformed_json_is_400(http: httpx.Client, path: str, raw: bytes) -> None:
    assert_error(http.post(path, content=raw, headers={"content-type": "application/json"}), 400)


def test_lone_surrogate_is_400_not_500(http: httpx.Client) -> None:
    raw = b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}'
    assert_error(http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"}), 400)
    raw = b'{"prompt": "a\\udfff"}'
    assert_error(http.post("/tokenize", content=raw, headers={"content-type": "application/json"}), 400)


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = {"prompt": "word " * 300_000}  # ~1.5 MB > --max-body-bytes 1 MiB
    assert_error(http.post("/v1/completions", json=big), 413)

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b" " * 100_000

    assert_error(http.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_unknown_route_and_method_use_the_error_shape(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/completions"), 405)


def test_detokenize_outside_vocabulary_is_400(http: httpx.Client) -> None:
    assert_error(http.post("/detokenize", json={"tokens": [1, 10**6]}), 400, "tokens")
