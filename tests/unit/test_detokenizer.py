"""IncrementalDetokenizer: the pieces it returns always add up to tokenizer.decode(output ids).

Property tests feed random id sequences (from the whole SmolLM2 vocabulary, special and
partial-UTF-8 byte tokens included) in random chunks, and random text through a SentencePiece
tokenizer (U+2581 spaces, the stripped leading space, byte fallback).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from titaninfer.loader.gguf_file import read_gguf
from titaninfer.tokenizer import IncrementalDetokenizer, Tokenizer

FFFD = "\ufffd"


@pytest.fixture(scope="module")
def tok(smollm2_gguf: str) -> Tokenizer:
    return Tokenizer.from_gguf(read_gguf(smollm2_gguf).metadata)


def _spm_tokenizer() -> Tokenizer:
    """A small Llama-style SentencePiece tokenizer (space prefix, byte fallback), from GGUF-style metadata."""
    from tokenizers import SentencePieceBPETokenizer

    corpus = ["the quick brown fox jumps over the lazy dog", "hello world hello there", "café déjà vu naïve",
              "tokens into text and text into tokens", "numbers 12345 and 678"] * 10
    trainer = SentencePieceBPETokenizer(add_prefix_space=True)
    trainer.train_from_iterator(corpus, vocab_size=200, min_frequency=2, show_progress=False)
    model = json.loads(trainer._tokenizer.to_str())["model"]
    pieces = list(dict.fromkeys("".join(m) if isinstance(m, list) else m.replace(" ", "") for m in model["merges"]))
    chars = [t for t in model["vocab"] if len(t) == 1 and t not in pieces]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + chars
    return Tokenizer.from_gguf({
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(i) for i in range(len(pieces) + len(chars))],
        "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * (len(pieces) + len(chars)),
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})


@pytest.fixture(scope="module")
def spm() -> Tokenizer:
    return _spm_tokenizer()


def _stream(tokenizer, ids: list[int], chunks: list[int], skip: bool) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tokenizer, [1, 2, 3], skip_special_tokens=skip)
    pieces, i, c = [], 0, 0
    while i < len(ids):
        n = chunks[c % len(chunks)] if chunks else 1
        pieces.append(detok.add_tokens(ids[i:i + n]))
        i, c = i + n, c + 1
    pieces.append(detok.flush())
    return pieces, detok


# ----------------------------------------------------------------------------- properties
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.one_of(st.integers(0, 49151), st.integers(0, 20), st.integers(100, 400)), max_size=40),
       chunks=st.lists(st.integers(1, 4), max_size=6), skip=st.booleans())
def test_random_ids_concatenate_to_decode(tok: Tokenizer, ids: list[int], chunks: list[int], skip: bool) -> None:
    pieces, detok = _stream(tok, ids, chunks, skip)
    expected = tok.decode(ids, skip_special_tokens=skip)
    assert "".join(pieces) == expected
    assert detok.text == expected and detok.output_token_ids == ids


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=50), chunks=st.lists(st.integers(1, 3), max_size=4))
def test_valid_text_never_shows_replacement_char(tok: Tokenizer, text: str, chunks: list[int]) -> None:
    """Text that decodes cleanly is streamed without a transient U+FFFD, and exactly."""
    ids = tok.encode(text)
    expected = tok.decode(ids)
    pieces, _ = _stream(tok, ids, chunks, True)
    assert "".join(pieces) == expected
    if FFFD not in expected:
        assert all(FFFD not in p for p in pieces)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["the", " the", "  ", "fox", " héllo", "日本", "😀", "<s>", "</s>", "\n", "12",
                                       "ß", " déjà"]), max_size=15),
       extra=st.lists(st.one_of(st.integers(0, 400), st.integers(3, 258)), max_size=6), chunks=st.lists(st.integers(1, 3), max_size=4),
       skip=st.booleans())
def test_sentencepiece_stream(spm: Tokenizer, words: list[str], extra: list[int], chunks: list[int],
                              skip: bool) -> None:
    ids = spm.encode("".join(words), add_special_tokens=False) + [i for i in extra if i < spm.vocab_size]
    pieces, _ = _stream(spm, ids, chunks, skip)
    assert "".join(pieces) == spm.decode(ids, skip_special_tokens=skip)


# ----------------------------------------------------------------------------- examples
def test_emoji_split_across_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("a 😀 b")
    assert len(ids) > 3  # the emoji takes two byte-level tokens
    detok = IncrementalDetokenizer(tok, [])
    pieces = [detok.add_tokens([i]) for i in ids]
    assert pieces == ["a", "", " 😀", " b"]
    assert detok.text == "a 😀 b"


def test_invalid_bytes_emit_replacement_once_final(tok: Tokenizer) -> None:
    e6 = tok.token_to_id("æ")  # byte 0xE6: starts a 3-byte character
    a = tok.token_to_id("A")
    detok = IncrementalDetokenizer(tok, [])
    assert detok.add_tokens([e6]) == ""  # could still become a character
    assert detok.add_tokens([a]) == FFFD + "A"  # now it cannot
    assert detok.add_tokens([e6]) == ""
    assert detok.flush() == FFFD  # end of stream: the incomplete byte is final
    assert detok.text == tok.decode([e6, a, e6])
    assert detok.flush() == ""


def test_skipped_special_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("<|im_start|>assistant\nHi<|im_end|>")
    skip = IncrementalDetokenizer(tok, [])
    keep = IncrementalDetokenizer(tok, [], skip_special_tokens=False)
    pieces = [skip.add_tokens([i]) for i in ids]
    assert pieces[0] == pieces[-1] == "" and "".join(pieces) == "assistant\nHi"
    assert "".join(keep.add_tokens([i]) for i in ids) == "<|im_start|>assistant\nHi<|im_end|>"


def test_sentencepiece_leading_space(spm: Tokenizer) -> None:
    ids = spm.encode("the fox the", add_special_tokens=False)
    assert spm.id_to_token(ids[0]).startswith("\u2581")
    detok = IncrementalDetokenizer(spm, spm.encode("prompt"))
    pieces = [detok.add_tokens([i]) for i in ids]
    # The first token's space is stripped, as decode(output_ids) does; later ones are kept.
    assert "".join(pieces) == "the fox the" == spm.decode(ids)
    assert pieces[-1].startswith(" ")
    # A skipped special token between words does not eat the next word's space.
    bos_between = ids[:1] + [1] + ids[1:]
    detok = IncrementalDetokenizer(spm, [])
    assert "".join(detok.add_tokens([i]) for i in bos_between) == spm.decode(bos_between) == "the fox the"


def test_byte_fallback_run_is_held_until_closed(spm: Tokenizer) -> None:
    """SentencePiece's decoder turns a whole invalid run of <0xXX> tokens into U+FFFDs, valid
    bytes included: "^" must not be shown before the run is known to be valid."""
    caret, e6, ex = spm.token_to_id("<0x5E>"), spm.token_to_id("<0xE6>"), spm.encode("x", add_special_tokens=False)
    ids = [caret, e6, *ex]
    assert spm.decode(ids).startswith(FFFD + FFFD)
    detok = IncrementalDetokenizer(spm, [])
    pieces = [detok.add_tokens([i]) for i in ids] + [detok.flush()]
    assert pieces[:2] == ["", ""] and "".join(pieces) == spm.decode(ids)
    # A valid character spelled in bytes comes out once the run is closed.
    ri = spm.encode("日 the", add_special_tokens=False)
    detok = IncrementalDetokenizer(spm, [])
    pieces = [detok.add_tokens([i]) for i in ri]
    assert "".join(pieces) == "日 the" and all(FFFD not in p for p in pieces)
    assert spm.byte_fallback_ids == frozenset(range(3, 259))


def test_work_per_token_is_bounded(tok: Tokenizer) -> None:
    """O(new tokens): every decode call sees a window of a few tokens, not the whole output."""
    seen: list[int] = []

    class Counting:
        byte_fallback_ids = tok.byte_fallback_ids
        is_special = staticmethod(tok.is_special)

        def decode(self, ids, skip_special_tokens=True):
            seen.append(len(ids))
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    text = "Streaming 日本語 text with émojis 😀🎉 and code: def f(x): return x\n" * 40
    ids = tok.encode(text)
    detok = IncrementalDetokenizer(Counting(), [])
    out = "".join(detok.add_tokens([i]) for i in ids) + detok.flush()
    assert out == text and len(ids) > 800
    assert max(seen) <= 6
    assert len(seen) <= 2 * len(ids) + 1


def test_add_tokens_accepts_batches_and_empty(tok: Tokenizer) -> None:
    ids = tok.encode("batch of tokens: ünïcödé")
    detok = IncrementalDetokenizer(tok, [])
    assert detok.add_tokens([]) == ""
    assert detok.add_tokens(ids) == "batch of tokens: ünïcödé"
    assert detok.flush() == ""
