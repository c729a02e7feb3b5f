"""Build a `tokenizers.Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata.

A GGUF carries no tokenizer.json: only the vocabulary, its token types, merges (BPE) or
scores (SentencePiece), special ids and the name of the pre-tokenizer
(`tokenizer.ggml.pre`). We rebuild the tokenizer the model was trained with:

- `gpt2` (byte-level BPE): vocab + merges from the file; the split regex comes from `pre`
  (see `_PRE_TOKENIZERS`, the same families llama.cpp distinguishes). An unknown `pre` is
  an error: a wrong split silently changes token ids.
- `llama` (SentencePiece BPE): vocab as spelled (U+2581 for spaces, <0xXX> byte-fallback
  tokens); merges rebuilt from the scores (a pair's rank is its merged piece's score, higher
  first, which is the order SentencePiece merges in); spaces become U+2581 with one prepended
  when `add_space_prefix`, and decoding undoes that.

Token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
Control and unknown tokens become special added tokens (matched whole in text, dropped by
`skip_special_tokens`); user-defined ones become non-special added tokens. Invariant: token
ids are exactly the file's indices (vocab_size == len(tokens)).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2 is Llama 3's split with single digits.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# `pre` name -> (split regex or None for GPT-2's built-in one, digits one at a time first,
# NFC-normalize first). SmolLM/StarCoder split every digit off before the GPT-2 regex
# (llama.cpp: "\p{N}" then the GPT-2 pattern); Qwen2's own tokenizer NFC-normalizes.
_PRE_TOKENIZERS: dict[str, tuple[str | None, bool, bool]] = {
    "default": (None, False, False),
    "gpt2": (None, False, False),
    "gpt-2": (None, False, False),
    "smollm": (None, True, False),
    "starcoder": (None, True, False),
    "refact": (None, True, False),
    "codeshell": (None, True, False),
    "llama-bpe": (_LLAMA3_SPLIT, False, False),
    "llama3": (_LLAMA3_SPLIT, False, False),
    "llama-v3": (_LLAMA3_SPLIT, False, False),
    "smaug-bpe": (_LLAMA3_SPLIT, False, False),
    "dbrx": (_LLAMA3_SPLIT, False, False),
    "qwen2": (_QWEN2_SPLIT, False, True),
    "deepseek-r1-qwen": (_QWEN2_SPLIT, False, True),
}


class GGUFTokenizerSpec(NamedTuple):
    """What `Tokenizer.from_gguf` needs beyond the tokenizers object."""

    tokenizer: HFTokenizer
    bos_token_id: int | None
    eos_token_id: int | None
    stop_token_ids: frozenset[int]  # eot / eom ids the file names
    add_bos_token: bool
    chat_template: str | None


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the byte-level alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _token_id(md: dict[str, Any], key: str, vocab_size: int) -> int | None:
    value = md.get(f"tokenizer.ggml.{key}")
    if value is None:
        return None
    if not 0 <= int(value) < vocab_size:
        raise ValueError(f"tokenizer.ggml.{key} = {value} is outside the vocabulary (size {vocab_size})")
    return int(value)


def _unique_vocab(spellings: list[str]) -> dict[str, int]:
    """{spelling: id}. A spelling that appears twice (some converted files have that) keeps its
    first id; later copies get a placeholder name so every id still has its own entry and the
    ids stay the file's indices. BPE never produces the placeholders."""
    vocab: dict[str, int] = {}
    for i, tok in enumerate(spellings):
        vocab[f"<titaninfer:duplicate:{i}>" if tok in vocab else tok] = i
    return vocab


def _byte_level_model(tokens: list[str], types: list[int], md: dict[str, Any]) -> tuple[BPE, list[str]]:
    byte_map = bytes_to_unicode()
    alphabet = set(byte_map.values())
    # Normal tokens are spelled in the byte alphabet; a few files store one as raw text, which
    # BPE could never produce: respell it. Added tokens keep their text (they are matched whole).
    spellings = [t if ty in (CONTROL, USER_DEFINED, UNKNOWN) or set(t) <= alphabet
                 else "".join(byte_map[b] for b in t.encode("utf-8"))
                 for t, ty in zip(tokens, types, strict=True)]
    merges_raw = md.get("tokenizer.ggml.merges")
    if not merges_raw:
        raise ValueError("GGUF gpt2 tokenizer has no tokenizer.ggml.merges")
    merges = [tuple(m.split(" ", 1)) for m in merges_raw]
    vocab = _unique_vocab(spellings)
    model = BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    return model, spellings


def _byte_level_pipeline(tok: HFTokenizer, pre: str) -> None:
    if pre not in _PRE_TOKENIZERS:
        raise ValueError(f"unsupported tokenizer.ggml.pre {pre!r} (supported: {', '.join(sorted(_PRE_TOKENIZERS))})")
    split, digits, nfc = _PRE_TOKENIZERS[pre]
    steps: list[Any] = []
    if digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    if split is None:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    else:
        steps.append(pre_tokenizers.Split(Regex(split), behavior="isolated"))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()


def _sentencepiece_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece BPE vocabulary: every split of a mergeable piece into
    two pieces of the vocabulary, ranked by the merged piece's score (higher merges first)."""
    mergeable: dict[str, int] = {}
    for i, (t, ty) in enumerate(zip(tokens, types, strict=True)):
        if ty in (NORMAL, USER_DEFINED):
            mergeable.setdefault(t, i)  # a duplicate spelling keeps its first id, as in the vocab
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, i in mergeable.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                # Ties broken like SentencePiece's vocabulary order: earlier piece first.
                ranked.append((-scores[i], i, cut, left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def _sentencepiece_model(tokens: list[str], types: list[int], md: dict[str, Any]) -> tuple[BPE, list[str]]:
    scores = md.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise ValueError("GGUF llama (SentencePiece) tokenizer needs tokenizer.ggml.scores, one per token")
    vocab = _unique_vocab(tokens)
    unk = next((t for t, ty in zip(tokens, types, strict=True) if ty == UNKNOWN), None)
    model = BPE(vocab=vocab, merges=_sentencepiece_merges(tokens, scores, types), unk_token=unk,
                fuse_unk=True, byte_fallback=True)
    return model, tokens


def _sentencepiece_pipeline(tok: HFTokenizer, add_space_prefix: bool) -> None:
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if add_space_prefix else "never", split=False)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)


def build_gguf_tokenizer(md: dict[str, Any]) -> GGUFTokenizerSpec:
    """Build the tokenizer described by GGUF metadata (plain values, as `read_gguf` gives)."""
    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ValueError("GGUF metadata has no tokenizer.ggml.tokens")
    tokens = list(tokens)
    types = list(md.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise ValueError("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    if kind not in ("gpt2", "llama"):
        raise ValueError(f"unsupported tokenizer.ggml.model {kind!r} (supported: gpt2, llama)")
    try:
        build = _byte_level_model if kind == "gpt2" else _sentencepiece_model
        model, spellings = build(tokens, types, md)
    except ValueError:
        raise
    except Exception as e:  # the tokenizers library's own error (e.g. a merge of unknown tokens)
        raise ValueError(f"cannot build the GGUF tokenizer: {e}") from None
    tok = HFTokenizer(model)
    if kind == "gpt2":
        _byte_level_pipeline(tok, str(md.get("tokenizer.ggml.pre") or "default"))
    else:
        _sentencepiece_pipeline(tok, bool(md.get("tokenizer.ggml.add_space_prefix", True)))

    vocab = tok.get_vocab(with_added_tokens=False)
    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(spellings, types, strict=True) if ty in (CONTROL, UNKNOWN) and vocab.get(t) is not None]
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(spellings, types, strict=True) if ty == USER_DEFINED and vocab.get(t) is not None]
    tok.add_special_tokens(special)
    tok.add_tokens(user)
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise ValueError("GGUF tokenizer vocabulary does not map one-to-one onto token ids")

    n = len(tokens)
    bos = _token_id(md, "bos_token_id", n)
    eos = _token_id(md, "eos_token_id", n)
    # llama.cpp adds BOS for SentencePiece vocabularies unless the file says otherwise.
    add_bos = bool(md.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
    prefix = (spellings[bos], bos) if add_bos and bos is not None else None
    suffix = (spellings[eos], eos) if add_eos and eos is not None else None
    if prefix or suffix:
        tok.post_processor = _template_processor(prefix, suffix)
    stops = frozenset(i for i in (_token_id(md, "eot_token_id", n), _token_id(md, "eom_token_id", n))
                      if i is not None)
    template = md.get("tokenizer.chat_template")
    return GGUFTokenizerSpec(tok, bos, eos, stops, prefix is not None,
                             template if isinstance(template, str) else None)


def _template_processor(prefix: tuple[str, int] | None, suffix: tuple[str, int] | None) -> Any:
    """Post-processor adding BOS (prefix) and/or EOS (suffix) around each sequence."""
    head = [f"{prefix[0]}:0"] if prefix else []
    single = head + ["$A:0"] + ([f"{suffix[0]}:0"] if suffix else [])
    pair = single + ["$B:1"] + ([f"{suffix[0]}:1"] if suffix else [])
    specials = dict(t for t in (prefix, suffix) if t is not None)
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=list(specials.items()))
