"""`Tokenizer`: text <-> token ids and chat rendering for one model.

Wraps a `tokenizers.Tokenizer` (the Rust library transformers' fast tokenizers use) built
from a Hugging Face folder (tokenizer.json + tokenizer_config.json ...) or from GGUF
metadata (see gguf_tokenizer.py). transformers is never imported here.

Invariants:
- ids are 0 <= id < vocab_size; `decode` raises ValueError for any other id;
- `encode(text, add_special_tokens=False)` never adds BOS/EOS; special-token text inside
  `text` (e.g. "<|im_end|>") is still recognised as that token, as transformers does;
- `eos_token_ids` contains `eos_token_id` (when there is one) plus every end-of-turn token of
  the vocabulary, so generation stops on either;
- `encode_chat(m) == encode(apply_chat_template(m), add_special_tokens=False)`: the template
  writes any BOS itself, as in transformers;
- `byte_fallback_ids` holds the <0xXX> tokens of a byte-fallback (SentencePiece) vocabulary,
  empty for byte-level BPE; the incremental detokenizer needs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from titaninfer.tokenizer.chat_template import FALLBACK_CHAT_TEMPLATE, render_chat_template
from titaninfer.tokenizer.gguf_tokenizer import build_gguf_tokenizer

# Special tokens that end an assistant turn in the common chat formats (ChatML, Llama 3,
# Gemma, Phi-3) or end a document; each is used only when it is a special token of the vocab.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>",
                      "<end_of_turn>", "<|end|>")


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    """tokenizer_config stores a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _pick_template(value: Any) -> str | None:
    """chat_template may be a string or a list of {name, template} (the "default" one wins)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) else None
    return None


def _byte_fallback_ids(tokenizer: HFTokenizer) -> frozenset[int]:
    """Ids of the <0xXX> tokens of a byte-fallback BPE (SentencePiece style), else empty.
    Their decoding depends on the whole run of them (see detokenizer.py)."""
    if not getattr(tokenizer.model, "byte_fallback", False):
        return frozenset()
    ids = (tokenizer.token_to_id(f"<0x{b:02X}>") for b in range(256))
    return frozenset(i for i in ids if i is not None)


class Tokenizer:
    """Text <-> ids for one model; see the module docstring for the invariants."""

    def __init__(self, tokenizer: HFTokenizer, *, bos_token_id: int | None, eos_token_id: int | None,
                 chat_template: str | None = None, extra_eos_ids: Iterable[int] = ()) -> None:
        self._tok = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.chat_template = chat_template
        self._special_ids = frozenset(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special)
        eos = {eos_token_id} if eos_token_id is not None else set()
        eos.update(extra_eos_ids)
        for text in END_OF_TURN_TOKENS:
            i = tokenizer.token_to_id(text)
            if i is not None and i in self._special_ids:
                eos.add(i)
        self.eos_token_ids: frozenset[int] = frozenset(eos)
        # The truth is what the post-processor does, whatever a config file claims.
        probe = tokenizer.encode("", add_special_tokens=True).ids
        self.add_bos_token: bool = bos_token_id is not None and probe[:1] == [bos_token_id]
        self.byte_fallback_ids: frozenset[int] = _byte_fallback_ids(tokenizer)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_gguf(cls, metadata: dict[str, Any]) -> Tokenizer:
        """From GGUF metadata as plain values (`read_gguf(path).metadata`)."""
        spec = build_gguf_tokenizer(metadata)
        return cls(spec.tokenizer, bos_token_id=spec.bos_token_id, eos_token_id=spec.eos_token_id,
                   chat_template=spec.chat_template, extra_eos_ids=spec.stop_token_ids)

    @classmethod
    def from_hf_folder(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """From a Hugging Face model folder: tokenizer.json, plus tokenizer_config.json /
        special_tokens_map.json (BOS/EOS), generation_config.json (extra EOS ids) and the chat
        template from tokenizer_config.json or chat_template.jinja."""
        path = os.fspath(path)
        tok_file = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tok_file):
            raise ValueError(f"no tokenizer.json in {path}")
        try:
            tok = HFTokenizer.from_file(tok_file)
        except Exception as e:  # the Rust error is the reason
            raise ValueError(f"cannot read {tok_file}: {e}") from None
        cfg = _read_json(os.path.join(path, "tokenizer_config.json"))
        special_map = _read_json(os.path.join(path, "special_tokens_map.json"))
        gen_cfg = _read_json(os.path.join(path, "generation_config.json"))

        def token_id(key: str) -> int | None:
            text = _token_text(cfg.get(key)) or _token_text(special_map.get(key))
            return tok.token_to_id(text) if text is not None else None

        template = _pick_template(cfg.get("chat_template"))
        jinja_file = os.path.join(path, "chat_template.jinja")
        if template is None and os.path.isfile(jinja_file):
            with open(jinja_file, encoding="utf-8") as f:
                template = f.read()
        gen_eos = gen_cfg.get("eos_token_id")
        extra = [gen_eos] if isinstance(gen_eos, int) else [i for i in gen_eos or [] if isinstance(i, int)]
        bos = token_id("bos_token")
        if bos is None and isinstance(gen_cfg.get("bos_token_id"), int):
            bos = gen_cfg["bos_token_id"]
        eos = token_id("eos_token")
        if eos is None and extra:
            eos = extra[0]
        return cls(tok, bos_token_id=bos, eos_token_id=eos, chat_template=template, extra_eos_ids=extra)

    # ------------------------------------------------------------------ ids <-> text
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; BOS/EOS are added only when `add_special_tokens` and the
        model's tokenizer adds them (see `add_bos_token`)."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`. Special tokens (control tokens such as <|im_end|>) are dropped when
        `skip_special_tokens`; incomplete UTF-8 byte sequences decode to U+FFFD."""
        ids = [int(i) for i in ids]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary (size {self.vocab_size})")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str:
        """The vocabulary entry of `token_id` as spelled in the vocab (byte-level or U+2581)."""
        token = self._tok.id_to_token(int(token_id)) if 0 <= int(token_id) < self.vocab_size else None
        if token is None:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def is_special(self, token_id: int) -> bool:
        """True for special (control) tokens: the ones `skip_special_tokens` drops."""
        return int(token_id) in self._special_ids

    @property
    def special_token_ids(self) -> frozenset[int]:
        return self._special_ids

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
        """Render `messages` ([{role, content}, ...]) with the model's Jinja template, exactly as
        transformers would. A model without a template uses FALLBACK_CHAT_TEMPLATE: one
        "role: content" line per message, then "assistant:" when `add_generation_prompt`.
        ValueError on a malformed message or a template error."""
        return render_chat_template(
            self.chat_template or FALLBACK_CHAT_TEMPLATE, messages,
            add_generation_prompt=add_generation_prompt, tools=tools,
            bos_token=self._token_str(self.bos_token_id), eos_token=self._token_str(self.eos_token_id),
            **kwargs)

    def encode_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> list[int]:
        """Render, then encode without adding special tokens (the template has them)."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False)

    def _token_str(self, token_id: int | None) -> str:
        return "" if token_id is None else (self._tok.id_to_token(token_id) or "")

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token_id}, "
                f"eos={sorted(self.eos_token_ids)}, chat_template={self.chat_template is not None})")
