"""The OpenAI routes through the official `openai` client, against the real server."""

from __future__ import annotations

from typing import Any

import pytest

CHAT = [{"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"


def _chat_stream(client: Any, **kw: Any) -> tuple[str, str | None, Any, int]:
    """-> (text, finish_reason, usage, number of finish chunks)."""
    text, finish, usage, finishes = "", None, None, 0
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason is not None:
                finish, finishes = c.finish_reason, finishes + 1
    return text, finish, usage, finishes


def _completion_stream(client: Any, **kw: Any) -> dict[int, tuple[str, str | None]]:
    out: dict[int, list[Any]] = {}
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            text, finish = out.setdefault(c.index, ["", None])
            assert finish is None, "a choice kept streaming after its finish_reason"
            out[c.index] = [text + c.text, c.finish_reason]
    return {i: (t, f) for i, (t, f) in out.items()}


def test_models_lists_the_served_model(client: Any, model_name: str) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [model_name] and model_name == "SmolLM2-135M-Instruct"


def test_chat_usage_counts_templated_prompt_and_returned_tokens(client: Any, model_name: str, tokenizer: Any) -> None:
    r = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12, temperature=0,
                                       logprobs=True, top_logprobs=2)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(tokenizer.encode_chat(CHAT))
    tokens = choice.logprobs.content
    assert r.usage.completion_tokens == len(tokens) >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)
    assert all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in tokens)
    visible = "".join(t.token for t in tokens if t.token != "<|im_end|>")
    assert visible == choice.message.content


def test_chat_streamed_equals_non_streamed_greedy(client: Any, model_name: str) -> None:
    kw = dict(model=model_name, messages=CHAT, max_completion_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kw)
    text, finish, usage, finishes = _chat_stream(client, stream_options={"include_usage": True}, **kw)
    assert text == whole.choices[0].message.content and text
    assert finish == whole.choices[0].finish_reason and finishes == 1
    assert usage is not None and usage.model_dump() == whole.usage.model_dump()


def test_chat_stream_without_include_usage_has_no_usage(client: Any, model_name: str) -> None:
    _, finish, usage, _ = _chat_stream(client, model=model_name, messages=CHAT, max_tokens=3, temperature=0)
    assert usage is None and finish == "length"


def test_completion_streamed_equals_non_streamed_greedy(client: Any, model_name: str, tokenizer: Any) -> None:
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw)
    assert whole.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert whole.usage.completion_tokens == 16 and whole.choices[0].finish_reason == "length"
    streamed = _completion_stream(client, **kw)
    assert streamed == {0: (whole.choices[0].text, "length")}


def test_completion_prompt_as_token_ids_matches_text(client: Any, model_name: str, tokenizer: Any) -> None:
    kw = dict(model=model_name, max_tokens=8, temperature=0)
    by_text = client.completions.create(prompt=PROMPT, **kw)
    by_ids = client.completions.create(prompt=tokenizer.encode(PROMPT), **kw)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens


def test_completion_n3_seeded_is_reproducible_streamed_or_not(client: Any, model_name: str) -> None:
    kw = dict(model=model_name, prompt="My favourite animal is", n=3, temperature=0.8, seed=1234,
              max_tokens=8, extra_body={"ignore_eos": True}, logprobs=0)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    texts_a = [c.text for c in sorted(a.choices, key=lambda c: c.index)]
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert texts_a == [c.text for c in sorted(b.choices, key=lambda c: c.index)]
    assert len(set(texts_a)) > 1, "three seeded samples at temperature 0.8 should differ"
    assert a.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in a.choices) == 24
    kw.pop("logprobs")
    streamed = _completion_stream(client, **kw)
    assert [streamed[i][0] for i in range(3)] == texts_a


def test_completion_batch_prompts_index_prompt_major(client: Any, model_name: str) -> None:
    prompts = ["One, two, three,", "Red, green,"]
    solo = [client.completions.create(model=model_name, prompt=p, max_tokens=6, temperature=0).choices[0].text
            for p in prompts]
    r = client.completions.create(model=model_name, prompt=prompts, n=2, max_tokens=6, temperature=0)
    by_index = {c.index: c.text for c in r.choices}
    assert by_index == {0: solo[0], 1: solo[0], 2: solo[1], 3: solo[1]}
    streamed = _completion_stream(client, model=model_name, prompt=prompts, n=2, max_tokens=6, temperature=0)
    assert {i: t for i, (t, _) in streamed.items()} == by_index


def test_stop_string_cuts_the_text(client: Any, model_name: str) -> None:
    kw = dict(model=model_name, prompt=PROMPT, max_tokens=12, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    assert "." in full
    cut = client.completions.create(stop=["."], **kw).choices[0]
    assert cut.text == full[:full.index(".")] and cut.finish_reason == "stop"
    streamed = _completion_stream(client, stop=".", **kw)
    assert streamed == {0: (cut.text, "stop")}


def test_completion_logprobs_object(client: Any, model_name: str) -> None:
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    c = r.choices[0]
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert len(lp.tokens) == r.usage.completion_tokens
    assert "".join(lp.tokens) == c.text
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 3 <= len(top) <= 4 and top[token] == pytest.approx(value)
        assert max(top.values()) == pytest.approx(value)  # greedy picks the most likely token
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_sampling_parameters_are_accepted(client: Any, model_name: str) -> None:
    r = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
        max_tokens=4, temperature=0.7, top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True, "priority": 1})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4
