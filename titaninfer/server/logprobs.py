"""Logprobs in OpenAI's two shapes, from the engine's `TokenLogprobs`.

- completions (`logprobs: int`): {tokens, token_logprobs, top_logprobs: [{text: lp}],
  text_offset}; each top dict holds the k most likely tokens plus the sampled one.
- chat (`logprobs: true`, `top_logprobs: k`): {content: [{token, logprob, bytes,
  top_logprobs: [{token, logprob, bytes}]}]}.

A token's text is its own bytes (from the vocabulary spelling: GPT-2 byte-level or
SentencePiece), decoded with replacement where a token holds part of a UTF-8 character;
`bytes` gives the exact bytes, as OpenAI does.
"""

from __future__ import annotations

import math
import re
from typing import Any

from titaninfer.tokenizer.gguf_tokenizer import bytes_to_unicode
from titaninfer.types import TokenLogprobs

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}  # byte-level char -> byte


def _finite(x: float) -> float:
    # JSON has no -inf; a token with zero probability gets the most negative float instead.
    return x if math.isfinite(x) else -9999.0


class TokenTexts:
    """Token id -> (text, bytes), cached (the vocabulary is fixed)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def _bytes(self, token_id: int) -> bytes:
        tok = self._tok
        if tok is None:
            return f"<{token_id}>".encode()
        if tok.is_special(token_id):
            return tok.decode([token_id], skip_special_tokens=False).encode("utf-8")
        spelled = tok.id_to_token(token_id)
        if all(c in _BYTE_DECODER for c in spelled):
            return bytes(_BYTE_DECODER[c] for c in spelled)
        m = _BYTE_TOKEN.fullmatch(spelled)
        if m:
            return bytes([int(m.group(1), 16)])
        return spelled.replace("\u2581", " ").encode("utf-8")

    def get(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is None:
            try:
                raw = self._bytes(token_id)
            except ValueError:  # outside the vocabulary: show the id rather than fail
                raw = f"<{token_id}>".encode()
            hit = (raw.decode("utf-8", errors="replace"), list(raw))
            if len(self._cache) < 1 << 18:
                self._cache[token_id] = hit
        return hit

    def text(self, token_id: int) -> str:
        return self.get(token_id)[0]


def completion_logprobs(texts: TokenTexts, lps: list[TokenLogprobs], text_offset: int = 0) -> dict[str, Any]:
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top: list[dict[str, float]] = []
    offsets: list[int] = []
    pos = text_offset
    for lp in lps:
        text = texts.text(lp.token_id)
        tokens.append(text)
        token_logprobs.append(_finite(lp.logprob))
        entry = {texts.text(t): _finite(v) for t, v in lp.top}
        entry.setdefault(text, _finite(lp.logprob))
        top.append(entry)
        offsets.append(pos)
        pos += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


def chat_logprobs(texts: TokenTexts, lps: list[TokenLogprobs]) -> dict[str, Any]:
    content = []
    for lp in lps:
        text, raw = texts.get(lp.token_id)
        top = []
        for t, v in lp.top:
            t_text, t_raw = texts.get(t)
            top.append({"token": t_text, "logprob": _finite(v), "bytes": t_raw})
        content.append({"token": text, "logprob": _finite(lp.logprob), "bytes": raw, "top_logprobs": top})
    return {"content": content}
