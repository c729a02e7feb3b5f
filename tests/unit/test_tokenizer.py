"""Tokenizer and chat templates against transformers.

References:
- transformers' GGUF tokenizer (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`) for
  SmolLM2, and transformers' own GGUF conversion for other `tokenizer.ggml.pre` families;
- SmolLM2's shipped tokenizer.json (digits split one by one before the GPT-2 regex, which is
  what llama.cpp's `smollm` pre-tokenizer means); transformers' GGUF loader does not know
  `smollm` and falls back to the bare GPT-2 regex, which only differs on non-ASCII numerals
  after a space (" ²", " ١٢٣"), see test_transformers_gguf_ignores_smollm_digit_split;
- a SentencePiece GGUF written here (vocabulary trained with `tokenizers`, scores = merge
  order), read back by transformers;
- a Hugging Face folder (tokenizer.json + tokenizer_config.json + generation_config.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, pre_tokenizers

from titaninfer.loader.gguf_file import read_gguf
from titaninfer.tokenizer import FALLBACK_CHAT_TEMPLATE, Tokenizer

TEXTS = [
    "Hello world", "hello, World! How are you?", "", " ", "  ", "\n", "\n\n\n", "\t\tindented\ttabs",
    "a  b   c    d", "trailing spaces   ", "   leading spaces", "line1\nline2\r\nline3\rline4",
    "12345", "3.14159 and 2,718", " 2024-11-22", "phone: +1 (555) 010-9999", "x1y22z333", "1st 2nd 3rd",
    "héllo wörld, façade, naïve, déjà vu", "Ελληνικά και русский текст", "日本語のテキストです。", "中文，标点。",
    "한국어 텍스트", "emoji 😀🙃🎉 family 👨‍👩‍👧‍👦 flags 🇫🇷", "mixed 日本 and English 123", "zero\u200bwidth",
    "def f(x):\n    return x ** 2  # square\n", "if (a && b) { return c; }", "<div class=\"x\">&amp;</div>",
    "don't won't I'm they're we've you'll he'd", "DON'T WON'T I'M", "$$ \\frac{1}{2} $$", "~!@#$%^&*()_+",
    "<|im_start|>user\nhi<|im_end|>", "text<|endoftext|>more", "<|im_end|><|im_end|>", "<repo_name>x<file_sep>",
    "<|im_start", "< |im_end| >", "\u00a0non-breaking\u00a0space", "combining e\u0301 vs é",
]


def _non_ascii_numerals(text: str) -> bool:
    return any(unicodedata.category(c).startswith("N") and not c.isascii() for c in text)


def _missing_bytes(tok: Tokenizer) -> set[int]:
    from titaninfer.tokenizer.gguf_tokenizer import bytes_to_unicode

    return {b for b, ch in bytes_to_unicode().items() if tok.token_to_id(ch) is None}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def smol_md(smollm2_gguf: str) -> dict:
    return read_gguf(smollm2_gguf).metadata


@pytest.fixture(scope="module")
def tok(smol_md: dict) -> Tokenizer:
    return Tokenizer.from_gguf(smol_md)


@pytest.fixture(scope="module")
def md_no_template(smol_md: dict) -> dict:
    return {k: v for k, v in smol_md.items() if k != "tokenizer.chat_template"}


@pytest.fixture(scope="module")
def hf(smollm2_gguf: str):
    from transformers import AutoTokenizer

    folder, name = os.path.split(smollm2_gguf)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="module")
def smol_json(hf) -> RustTokenizer:
    """SmolLM2's tokenizer.json as shipped: transformers' vocab/merges + the digit split."""
    ref = RustTokenizer.from_str(hf.backend_tokenizer.to_str())
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return ref


# ----------------------------------------------------------------------------- SmolLM2 (byte-level BPE)
def test_smollm2_attributes(tok: Tokenizer, hf) -> None:
    assert tok.vocab_size == 49152 == len(hf)
    assert tok.bos_token_id == hf.bos_token_id == 1
    assert tok.eos_token_id == hf.eos_token_id == 2
    assert tok.eos_token_ids == frozenset({0, 2})  # <|im_end|> and <|endoftext|>
    assert tok.add_bos_token is False
    assert tok.chat_template == hf.chat_template
    assert tok.special_token_ids == frozenset(range(17))
    assert [tok.is_special(i) for i in (0, 2, 16, 17, 1000)] == [True, True, True, False, False]
    assert tok.id_to_token(2) == "<|im_end|>" and tok.id_to_token(28) == ","
    assert [tok.id_to_token(i) for i in (905, 216)] == hf.convert_ids_to_tokens([905, 216])
    with pytest.raises(ValueError):
        tok.id_to_token(49152)
    assert tok.byte_fallback_ids == frozenset()  # byte-level BPE: every byte is a token
    assert len(_missing_bytes(tok)) == 21 and 0x1D in _missing_bytes(tok)
    # The byte is dropped after BPE, so "a" and "b" do not merge.
    assert tok.encode("a\x1db") == hf.encode("a\x1db") == [tok.token_to_id("a"), tok.token_to_id("b")]


@pytest.mark.parametrize("add_special", [True, False])
def test_smollm2_encode_matches_transformers(tok: Tokenizer, hf, smol_json, add_special: bool) -> None:
    for text in TEXTS:
        ours = tok.encode(text, add_special_tokens=add_special)
        assert ours == smol_json.encode(text, add_special_tokens=add_special).ids, text
        if not _non_ascii_numerals(text):
            assert ours == hf.encode(text, add_special_tokens=add_special), text


def test_transformers_gguf_ignores_smollm_digit_split(tok: Tokenizer, hf, smol_json) -> None:
    text = "x ² and ١٢٣"
    assert tok.encode(text) == smol_json.encode(text).ids
    assert tok.encode(text) != hf.encode(text)  # if transformers learns `smollm`, drop the filter above


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_smollm2_encode_random_text(tok: Tokenizer, hf, smol_json, text: str) -> None:
    ours = tok.encode(text)
    assert ours == smol_json.encode(text).ids
    if not _non_ascii_numerals(text):
        assert ours == hf.encode(text)
    # Lossless, except that SmolLM2's vocabulary lacks 21 byte symbols (0x04, 0x06, 0x13, 0x14,
    # 0x16, 0x1D, C0, C1, F1, F2, F5-FF): those bytes vanish, in transformers too.
    missing = _missing_bytes(tok)
    kept = bytes(b for b in text.encode() if b not in missing)
    assert tok.decode(ours) == kept.decode("utf-8", errors="replace")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(0, 20), st.integers(0, 49151)), max_size=25), st.booleans())
def test_smollm2_decode_matches_transformers(tok: Tokenizer, hf, ids: list[int], skip: bool) -> None:
    assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_smollm2_decode_special_tokens(tok: Tokenizer, hf) -> None:
    ids = tok.encode("<|im_start|>assistant\nHi there<|im_end|>\n")
    assert ids[0] == 1 and 2 in ids
    assert tok.decode(ids) == "assistant\nHi there\n"  # ours skips special tokens by default
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>assistant\nHi there<|im_end|>\n"
    assert hf.decode(ids) == tok.decode(ids, skip_special_tokens=False)  # transformers' default keeps them
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([5, 49152])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])


def test_encode_rejects_non_str(tok: Tokenizer) -> None:
    with pytest.raises(ValueError):
        tok.encode(b"bytes")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- chat template
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "¿Qué tal? 日本 😀"}, {"role": "assistant", "content": "Bien."},
     {"role": "user", "content": "Y <|im_end|> dentro?"}],
]


@pytest.mark.parametrize("gen", [True, False])
def test_smollm2_chat_template_matches_transformers(tok: Tokenizer, hf, gen: bool) -> None:
    for msgs in CONVERSATIONS:
        text = tok.apply_chat_template(msgs, add_generation_prompt=gen)
        assert text == hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
        ref_ids = hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen)["input_ids"]
        assert tok.encode_chat(msgs, add_generation_prompt=gen) == ref_ids
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


RICH_TEMPLATE = """{%- if tools %}
<tools>{{ tools | tojson }}</tools>
{%- endif %}
{% set ns = namespace(n=0) %}
{% for m in messages %}
  {% if m['role'] == 'forbidden' %}{{ raise_exception('role forbidden is not allowed') }}{% endif %}
  {% if m['content'] == 'STOP' %}{% break %}{% endif %}
  {% set ns.n = ns.n + 1 %}
  {{ bos_token }}[{{ loop.index }}] {{ m['role'] | upper }}: {% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | trim }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{{ eos_token }}
{% endfor %}
count={{ ns.n }} data={{ {"ü": [1, 2.5, none, true]} | tojson }} year={{ strftime_now('%Y')[:2] }}
{% if add_generation_prompt %}ASSISTANT:{% if enable_thinking is defined and not enable_thinking %} /no_think{% endif %}{% endif %}"""

TOOLS = [{"type": "function", "function": {"name": "météo", "description": "weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.mark.parametrize("kwargs", [{}, {"tools": TOOLS}, {"enable_thinking": False}])
def test_rich_template_matches_transformers(md_no_template: dict, hf, kwargs: dict) -> None:
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "  a1  "}, {"role": "user", "content": "STOP"},
            {"role": "user", "content": "never shown"}]
    tpl = Tokenizer.from_gguf({**md_no_template, "tokenizer.chat_template": RICH_TEMPLATE})
    ours = tpl.apply_chat_template(msgs, **kwargs)
    ref = hf.apply_chat_template(msgs, chat_template=RICH_TEMPLATE, tokenize=False, add_generation_prompt=True, **kwargs)
    assert ours == ref
    assert "count=3" in ours and "never shown" not in ours and '"ü"' in ours
    if "tools" in kwargs:
        assert "météo" in ours  # tojson keeps non-ASCII, as transformers does


def test_template_errors_are_value_errors(tok: Tokenizer, md_no_template: dict) -> None:
    bad_messages = [
        "hello",
        [{"content": "no role"}],
        [{"role": "user"}],
        [{"role": "user", "content": 5}],
        [["user", "hi"]],
        [{"role": "", "content": "x"}],
        [{"role": "user", "content": ["not a dict part"]}],
    ]
    for msgs in bad_messages:
        with pytest.raises(ValueError):
            tok.apply_chat_template(msgs)  # type: ignore[arg-type]
    # An assistant message with tool calls may have no content; SmolLM2's template cannot
    # print None, which is a template failure, reported as such.
    call = [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]
    assert Tokenizer.from_gguf(md_no_template).apply_chat_template(call).endswith("assistant: None\nassistant:")
    with pytest.raises(ValueError, match="chat template failed: TypeError"):
        tok.apply_chat_template(call)
    raising = Tokenizer.from_gguf({**md_no_template, "tokenizer.chat_template": RICH_TEMPLATE})
    with pytest.raises(ValueError, match="role forbidden is not allowed"):
        raising.apply_chat_template([{"role": "forbidden", "content": "x"}])
    broken = Tokenizer.from_gguf({**md_no_template, "tokenizer.chat_template": "{% for m in messages %}"})
    with pytest.raises(ValueError, match="syntax"):
        broken.apply_chat_template([{"role": "user", "content": "x"}])
    undefined = Tokenizer.from_gguf({**md_no_template, "tokenizer.chat_template": "{{ nothing.here }}"})
    with pytest.raises(ValueError, match="chat template failed"):
        undefined.apply_chat_template([{"role": "user", "content": "x"}])
    sandbox = Tokenizer.from_gguf({**md_no_template,
                                   "tokenizer.chat_template": "{{ messages.__class__.__mro__ }}"})
    with pytest.raises(ValueError):
        sandbox.apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="tools"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], tools="not a list")  # type: ignore[arg-type]


def test_fallback_template(md_no_template: dict) -> None:
    plain = Tokenizer.from_gguf(md_no_template)
    assert plain.chat_template is None
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert plain.apply_chat_template(msgs) == "system: S\nuser: hi\nassistant:"
    assert plain.apply_chat_template(msgs, add_generation_prompt=False) == "system: S\nuser: hi\n"
    assert plain.encode_chat(msgs) == plain.encode("system: S\nuser: hi\nassistant:", add_special_tokens=False)
    assert "role" in FALLBACK_CHAT_TEMPLATE


def test_no_transformers_import() -> None:
    code = ("import sys; from titaninfer.tokenizer import Tokenizer, IncrementalDetokenizer, StopChecker; "
            "import titaninfer.loader.gguf_file; assert 'transformers' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))


# ----------------------------------------------------------------------------- other pre-tokenizers
PRE_TEXTS = [t for t in TEXTS if unicodedata.normalize("NFC", t) == t] + [
    "I'M GOING, you'RE  123456789 x\n\n\n  y", "a\r\n\r\nb", "   \n   z", "12 345 6789 0", "日本語123abc",
]


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "gpt2", "default"])
def test_pre_tokenizer_families_match_transformers(smol_md: dict, pre: str) -> None:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    md = {**smol_md, "tokenizer.ggml.pre": pre}
    ours = Tokenizer.from_gguf(md)
    tok_dict = {"tokenizer_type": "gpt2", "pre_tokenizer_type": pre, "tokens": md["tokenizer.ggml.tokens"],
                "merges": md["tokenizer.ggml.merges"], "token_type": md["tokenizer.ggml.token_type"]}
    ref, _ = convert_gguf_tokenizer("llama", tok_dict)
    for text in PRE_TEXTS:
        if pre != "llama-bpe" and _non_ascii_numerals(text):
            continue
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == ref.encode(text, add_special_tokens=False).ids, (pre, text)
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False)
    # The families really split differently (Llama 3 groups digits by three, Qwen2 splits
    # them one by one, GPT-2 keeps a run whole).
    pieces = [p for p, _ in ours._tok.pre_tokenizer.pre_tokenize_str("x 1234567")]
    assert pieces == {"llama-bpe": ["x", "Ġ", "123", "456", "7"], "qwen2": ["x", "Ġ", "1", "2", "3", "4", "5", "6", "7"],
                      "gpt2": ["x", "Ġ1234567"], "default": ["x", "Ġ1234567"]}[pre]


def test_qwen2_normalizes_nfc(smol_md: dict) -> None:
    ours = Tokenizer.from_gguf({**smol_md, "tokenizer.ggml.pre": "qwen2"})
    assert ours.encode("cafe\u0301") == ours.encode("café")


def test_unsupported_tokenizer_kinds(smol_md: dict) -> None:
    with pytest.raises(ValueError, match="tokenizer.ggml.pre 'mystery'"):
        Tokenizer.from_gguf({**smol_md, "tokenizer.ggml.pre": "mystery"})
    with pytest.raises(ValueError, match="tokenizer.ggml.model 'bert'"):
        Tokenizer.from_gguf({**smol_md, "tokenizer.ggml.model": "bert"})
    with pytest.raises(ValueError, match="tokens"):
        Tokenizer.from_gguf({"tokenizer.ggml.model": "gpt2"})
    with pytest.raises(ValueError, match="cannot build the GGUF tokenizer"):
        Tokenizer.from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"],
                             "tokenizer.ggml.merges": ["a c"]})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Tokenizer.from_gguf({**smol_md, "tokenizer.ggml.eos_token_id": 10**6})


def test_user_defined_and_duplicate_tokens(smol_md: dict) -> None:
    types = list(smol_md["tokenizer.ggml.token_type"])
    types[3] = 4  # <repo_name> as USER_DEFINED: matched whole, but not special
    t = Tokenizer.from_gguf({**smol_md, "tokenizer.ggml.token_type": types})
    assert t.vocab_size == 49152 and not t.is_special(3) and t.is_special(4)
    assert t.encode("a<repo_name>b") == [t.token_to_id("a"), 3, t.token_to_id("b")]
    assert t.decode([3, 4]) == "<repo_name>"  # only the special one is skipped


def test_eot_id_from_gguf_ends_generation(smol_md: dict) -> None:
    t = Tokenizer.from_gguf({**smol_md, "tokenizer.ggml.eot_token_id": 5})
    assert t.eos_token_ids == frozenset({0, 2, 5})


# ----------------------------------------------------------------------------- SentencePiece GGUF
SPM_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there; the world is wide and the sea is deep.",
    "Tokenizers turn text into tokens and tokens back into text.",
    "Café crème brûlée, naïve façade: déjà vu.",
    "In 2024 the model read 12345 numbers and 3.14159 digits of pi.",
    "def hello(name):\n    return f'hello {name}'\n",
    "She said: \"don't stop\" and they're going; we'll see what I've done.",
] * 20


def spm_vocab() -> tuple[list[str], list[float], list[int]]:
    """A Llama-style SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces
    best-first (score = -rank) and single characters last, like sentencepiece writes it."""
    from tokenizers import SentencePieceBPETokenizer

    trainer = SentencePieceBPETokenizer(add_prefix_space=True)
    trainer.train_from_iterator(SPM_CORPUS, vocab_size=400, min_frequency=2, show_progress=False)
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merged = ["".join(m) if isinstance(m, list) else m.replace(" ", "") for m in model["merges"]]
    pieces = list(dict.fromkeys(merged))
    chars = [t for t in model["vocab"] if len(t) == 1 and t not in pieces]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + chars
    types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) + len(chars))
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces) + len(chars))]
    return tokens, scores, types


def write_spm_gguf(path: str, add_space_prefix: bool) -> None:
    tokens, scores, types = spm_vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(add_space_prefix)
    w.add_chat_template("{% for m in messages %}{{ bos_token }}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}")
    import numpy as np

    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SPM_TEXTS = [t for t in TEXTS if "\r" not in t] + [
    "the quick brown fox", " the", "the  the", "hello\nworld", "<s>the</s> the", "Tokenizers tokens!",
    "numbers 12345 3.14159", "déjà vu Café", "unknown chars: ß∂ƒ©˙∆˚¬",
]


@pytest.fixture(scope="module", params=[True, False], ids=["space_prefix", "no_space_prefix"])
def spm_pair(request, tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("spm")
    write_spm_gguf(str(folder / "spm.gguf"), add_space_prefix=request.param)
    ours = Tokenizer.from_gguf(read_gguf(str(folder / "spm.gguf")).metadata)
    ref = AutoTokenizer.from_pretrained(str(folder), gguf_file="spm.gguf")
    if not request.param:
        # transformers ignores add_space_prefix=false (llama.cpp honours it): patch the
        # reference to what the flag means, no prepended U+2581 and no stripped space.
        assert ref.encode("the", add_special_tokens=False) == [ref.convert_tokens_to_ids("\u2581the")]
        ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=False)
        ref.backend_tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return ours, ref, request.param


def test_spm_matches_transformers(spm_pair) -> None:
    ours, ref, space_prefix = spm_pair
    assert ours.vocab_size == len(ref) and ours.bos_token_id == 1 and ours.eos_token_id == 2
    assert ours.add_bos_token is True  # SentencePiece GGUFs add BOS unless they say otherwise
    for text in SPM_TEXTS:
        for add_special in (True, False):
            ids = ours.encode(text, add_special_tokens=add_special)
            assert ids == ref.encode(text, add_special_tokens=add_special), (text, add_special)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), text
    assert ours.byte_fallback_ids == frozenset(range(3, 259))
    ids = ours.encode("the fox")
    assert ids[0] == 1 and ours.id_to_token(ids[1]).startswith("\u2581") == space_prefix
    assert ours.encode("日") == [1] + ([ours.token_to_id("\u2581")] if space_prefix else []) + [
        ours.token_to_id(f"<0x{b:02X}>") for b in "日".encode()]  # byte fallback
    msgs = [{"role": "user", "content": "the fox"}]
    assert ours.apply_chat_template(msgs) == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert ours.encode_chat(msgs) == ref.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)["input_ids"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list("the quick brown fox jumps héllo 123\n.,'!日😀") + ["<s>", "</s>", "  "]),
                max_size=40).map("".join),
       st.lists(st.integers(0, 523), max_size=20))
def test_spm_random_matches_transformers(spm_pair, text: str, ids: list[int]) -> None:
    ours, ref, _ = spm_pair
    assert ours.encode(text) == ref.encode(text)
    ids = [i for i in ids if i < ours.vocab_size]
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)


def test_spm_merges_follow_scores() -> None:
    """Merges come from scores: reversing the scores of two competing pieces changes the result."""
    base = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "c", "ab", "bc"]
    types = [2, 3, 3, 1, 1, 1, 1, 1, 1]
    md = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": base, "tokenizer.ggml.token_type": types,
          "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.add_space_prefix": False}
    ab_first = Tokenizer.from_gguf({**md, "tokenizer.ggml.scores": [0, 0, 0, -9, -9, -9, -9, -1, -2]})
    bc_first = Tokenizer.from_gguf({**md, "tokenizer.ggml.scores": [0, 0, 0, -9, -9, -9, -9, -2, -1]})
    assert ab_first.encode("abc", add_special_tokens=False) == [7, 6]
    assert bc_first.encode("abc", add_special_tokens=False) == [4, 8]
    with pytest.raises(ValueError, match="scores"):
        Tokenizer.from_gguf(md)
    # A spelling listed twice keeps every id in place (the copy is never produced).
    dup = Tokenizer.from_gguf({**md, "tokenizer.ggml.tokens": [*base, "ab"], "tokenizer.ggml.token_type": [*types, 1],
                               "tokenizer.ggml.scores": [0, 0, 0, -9, -9, -9, -9, -1, -2, -3]})
    assert dup.vocab_size == 10 and dup.encode("abc", add_special_tokens=False) == [7, 6]


# ----------------------------------------------------------------------------- Hugging Face folder
HF_FOLDER_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>"
                      "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, smol_json) -> str:
    folder = tmp_path_factory.mktemp("hf_tok")
    smol_json.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "add_prefix_space": False, "clean_up_tokenization_spaces": False, "model_max_length": 8192,
        "chat_template": HF_FOLDER_TEMPLATE}))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2, 5]}))
    return str(folder)


def test_hf_folder_matches_transformers(hf_folder: str) -> None:
    from transformers import AutoTokenizer

    ours = Tokenizer.from_hf_folder(hf_folder)
    ref = AutoTokenizer.from_pretrained(hf_folder)
    assert (ours.bos_token_id, ours.eos_token_id) == (ref.bos_token_id, ref.eos_token_id) == (1, 2)
    assert ours.eos_token_ids == frozenset({0, 2, 5})  # + generation_config's 5, + <|endoftext|>
    assert ours.vocab_size == len(ref) and ours.chat_template == HF_FOLDER_TEMPLATE
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text), text
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    for msgs in CONVERSATIONS:
        assert ours.apply_chat_template(msgs) == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert ours.encode_chat(msgs) == ref.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"]


def test_hf_folder_template_file_and_special_map(hf_folder: str, tmp_path) -> None:
    import shutil

    shutil.copy(os.path.join(hf_folder, "tokenizer.json"), tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}],
        "bos_token": {"__type": "AddedToken", "content": "<|im_start|>", "special": True}}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    t = Tokenizer.from_hf_folder(tmp_path)
    assert t.chat_template == "DEFAULT" and t.eos_token_id == 0 and t.bos_token_id == 1
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!")
    t = Tokenizer.from_hf_folder(tmp_path)
    assert t.apply_chat_template([{"role": "user", "content": "hey"}]) == "hey!"
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_hf_folder(tmp_path / "missing")
