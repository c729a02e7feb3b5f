"""GGUF loading against independent references.

- SmolLM2-135M-Instruct (Q4_1/Q8_0/F32, llama architecture): every tensor equals what
  transformers' GGUF loader produces (this checks the q/k un-permutation), and the config and
  tokenizer metadata agree with transformers' parse of the same file.
- Tiny files written here with gguf.GGUFWriter: llama (every supported tensor type, untied
  head), qwen2 (q/k/v biases, tied, no permutation), qwen3 (q/k norms, head_dim from
  key_length); compared with transformers too, and the metadata with gguf.GGUFReader.
- Llama 3 rope scaling stored as rope_freqs; error paths.

transformers' `AutoModelForCausalLM.from_pretrained(gguf_file=...)` needs `accelerate`, which
is not a project dependency, so the reference is the same transformers code path without it:
`load_gguf_checkpoint(path, return_tensors=True, model_to_load=<meta-device HF model>)`.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

from titaninfer.config import ModelConfig, RopeScaling
from titaninfer.layers.rotary import rope_inv_freq
from titaninfer.loader.gguf_file import GGUFModel, read_gguf


# ----------------------------------------------------------------------------- references
def _hf_checkpoint(path: str, hf_config: dict | None = None) -> dict:
    """transformers' parse of a GGUF file: {'config', 'tokenizer', 'tensors', ...}."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    if hf_config is None:  # tiny files: let transformers parse the config itself
        folder, name = os.path.split(path)
        cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    else:  # big file: only the parameter names matter here; avoid a second slow parse
        cfg = LlamaConfig(num_hidden_layers=hf_config["num_hidden_layers"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    # transformers rebuilds gguf's TensorNameMap once per submodule (~400 for SmolLM2, most of
    # its load time); the map is a pure function of (arch, layers), so caching it is safe.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
        return load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)


def _llama_cpp_permute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q/k rows (LlamaModel.permute)."""
    return (w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _kquant_bytes(rng: np.random.Generator, rows: int, cols: int, qtype: Q) -> np.ndarray:
    """Random K-quant blocks with sane fp16 scales (gguf-py cannot quantize K types)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    half = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    if qtype == Q.Q4_K:  # d, dmin lead the block
        raw[..., 0:2] = half
        raw[..., 2:4] = half
    else:  # Q6_K: d ends the block
        raw[..., -2:] = half
    return raw.reshape(rows, -1)


def write_tiny_gguf(path: str, arch: str, *, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                    head_dim: int | None = None, inter: int = 256, layers: int = 2, vocab: int = 64,
                    tied: bool = False, bias: bool = False, qk_norm: bool = False,
                    qtypes: dict[str, Q] | None = None, rope_freqs: np.ndarray | None = None,
                    theta: float = 500000.0, extra: tuple = ()) -> None:
    rng = np.random.default_rng(len(path) + hidden)
    head_dim = head_dim or hidden // heads
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(theta)
    if head_dim != hidden // heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([chr(ord("a") + i % 26) * (1 + i // 26) for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    qtypes = qtypes or {}

    def add(name: str, shape: tuple[int, ...]) -> None:
        key = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
        qt = qtypes.get(key, Q.F32)
        arr = rng.standard_normal(shape).astype(np.float32)
        if qt == Q.F32:
            w.add_tensor(name, arr)
        elif qt == Q.F16:
            w.add_tensor(name, arr.astype(np.float16))
        elif qt in (Q.Q4_K, Q.Q6_K):
            w.add_tensor(name, _kquant_bytes(rng, *shape, qt), raw_dtype=qt)
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)

    add("token_embd.weight", (vocab, hidden))
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,))
        add(f"blk.{i}.attn_q.weight", (heads * head_dim, hidden))
        add(f"blk.{i}.attn_k.weight", (kv_heads * head_dim, hidden))
        add(f"blk.{i}.attn_v.weight", (kv_heads * head_dim, hidden))
        if bias:
            add(f"blk.{i}.attn_q.bias", (heads * head_dim,))
            add(f"blk.{i}.attn_k.bias", (kv_heads * head_dim,))
            add(f"blk.{i}.attn_v.bias", (kv_heads * head_dim,))
        if qk_norm:
            add(f"blk.{i}.attn_q_norm.weight", (head_dim,))
            add(f"blk.{i}.attn_k_norm.weight", (head_dim,))
        add(f"blk.{i}.attn_output.weight", (hidden, heads * head_dim))
        add(f"blk.{i}.ffn_norm.weight", (hidden,))
        add(f"blk.{i}.ffn_gate.weight", (inter, hidden))
        add(f"blk.{i}.ffn_up.weight", (inter, hidden))
        add(f"blk.{i}.ffn_down.weight", (hidden, inter))
    add("output_norm.weight", (hidden,))
    if not tied:
        add("output.weight", (vocab, hidden))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, np.float32))
    for name, arr, qt in extra:
        w.add_tensor(name, arr, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ----------------------------------------------------------------------------- SmolLM2
@pytest.fixture(scope="module")
def smol(smollm2_gguf: str) -> GGUFModel:
    return read_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def smol_weights(smol: GGUFModel) -> dict[str, torch.Tensor]:
    return dict(smol.iter_weights())


@pytest.fixture(scope="module")
def smol_hf(smol: GGUFModel, smollm2_gguf: str) -> dict:
    return _hf_checkpoint(smollm2_gguf, smol.hf_config)


def test_smollm2_weights_equal_transformers(smol: GGUFModel, smol_weights: dict, smol_hf: dict) -> None:
    ref = smol_hf["tensors"]
    assert smol.hf_config["tie_word_embeddings"] is True
    assert set(smol_weights) == set(ref) == set(smol.tensor_names)
    assert "lm_head.weight" not in smol_weights
    assert len(smol_weights) == 272
    for name, tensor in smol_weights.items():
        assert tensor.dtype == torch.float32 and tensor.is_contiguous(), name
        assert torch.equal(tensor, ref[name]), name


def test_smollm2_qk_rows_are_unpermuted(smol: GGUFModel, smol_weights: dict) -> None:
    """Re-applying llama.cpp's permutation to our q/k gives back the file's raw rows."""
    from titaninfer.loader.gguf_file import _dequantize

    raw = {t.name: t for t in smol._tensors}
    for gguf_name, hf_name, heads in (("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight", 9),
                                      ("blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight", 3)):
        file_rows = _dequantize(smol._data, raw[gguf_name])
        ours = smol_weights[hf_name].numpy()
        assert not np.array_equal(ours, file_rows)  # the permutation is not the identity
        assert np.array_equal(_llama_cpp_permute(ours, heads), file_rows)


def test_smollm2_config_matches_transformers(smol: GGUFModel, smol_hf: dict) -> None:
    ref = smol_hf["config"]
    cfg = smol.hf_config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_theta",
                "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id"):
        assert cfg[key] == ref[key], key
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["rope_scaling"] is None
    mc = ModelConfig.from_hf(cfg)
    assert (mc.num_layers, mc.num_heads, mc.num_kv_heads, mc.head_dim) == (30, 9, 3, 64)
    assert mc.tie_word_embeddings and not mc.attention_bias and not mc.qk_norm
    assert mc.eos_token_ids == (2,) and mc.bos_token_id == 1


def test_smollm2_metadata_plain_values(smol: GGUFModel, smol_hf: dict) -> None:
    md = smol.metadata
    tok = smol_hf["tokenizer"]
    assert md["tokenizer.ggml.tokens"] == tok["tokens"]
    assert md["tokenizer.ggml.merges"] == tok["merges"]
    assert md["tokenizer.ggml.token_type"] == tok["token_type"]
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "smollm"
    assert md["general.architecture"] == "llama"
    assert isinstance(md["llama.block_count"], int) and isinstance(md["tokenizer.ggml.add_bos_token"], bool)
    assert md["tokenizer.chat_template"].startswith("{% for message in messages %}")


def test_smollm2_loads_into_titaninfer_model(smol: GGUFModel) -> None:
    """Names and shapes fit our model (meta device: no memory, load_weights still checks)."""
    from titaninfer.models.llama import LlamaForCausalLM

    cfg = ModelConfig.from_hf(smol.hf_config)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.load_weights(smol.iter_weights())


# ----------------------------------------------------------------------------- tiny files
_ALL_TYPES = {"token_embd": Q.Q8_0, "attn_q": Q.Q4_0, "attn_k": Q.Q4_1, "attn_v": Q.Q5_0,
              "attn_output": Q.Q5_1, "ffn_gate": Q.F16, "ffn_up": Q.BF16, "ffn_down": Q.Q4_K,
              "output": Q.Q6_K}

_TINY = {
    "llama": dict(hidden=256, qtypes=_ALL_TYPES),
    "qwen2": dict(bias=True, tied=True, qtypes={"attn_q": Q.Q8_0, "ffn_up": Q.F16}),
    "qwen3": dict(qk_norm=True, head_dim=32, qtypes={"attn_k": Q.Q8_0}),
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("gguf")
    for arch, kw in _TINY.items():
        write_tiny_gguf(str(folder / f"{arch}.gguf"), arch, **kw)
    return str(folder)


@pytest.mark.parametrize("arch", sorted(_TINY))
def test_tiny_weights_equal_transformers(tiny_dir: str, arch: str) -> None:
    path = os.path.join(tiny_dir, f"{arch}.gguf")
    m = read_gguf(path)
    ours = dict(m.iter_weights())
    ref = _hf_checkpoint(path)["tensors"]
    assert set(ours) == set(ref) == set(m.tensor_names)
    for name, tensor in ours.items():
        assert torch.equal(tensor, ref[name]), name
    if arch == "qwen2":
        assert "model.layers.0.self_attn.q_proj.bias" in ours and "lm_head.weight" not in ours
    if arch == "qwen3":
        assert ours["model.layers.1.self_attn.q_norm.weight"].shape == (32,)


@pytest.mark.parametrize("arch", sorted(_TINY))
def test_tiny_config_and_model_load(tiny_dir: str, arch: str) -> None:
    from titaninfer.models import llama, qwen2, qwen3

    m = read_gguf(os.path.join(tiny_dir, f"{arch}.gguf"))
    cfg = m.hf_config
    kw = _TINY[arch]
    assert cfg["model_type"] == arch
    assert cfg["architectures"] == [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                     "qwen3": "Qwen3ForCausalLM"}[arch]]
    assert cfg["head_dim"] == kw.get("head_dim", kw.get("hidden", 64) // 4)
    assert cfg["attention_bias"] is bool(kw.get("bias"))
    assert cfg["tie_word_embeddings"] is bool(kw.get("tied"))
    assert (cfg["vocab_size"], cfg["max_position_embeddings"], cfg["rope_theta"]) == (64, 256, 500000.0)
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (0, 1)
    mc = ModelConfig.from_hf(cfg)
    assert mc.qk_norm is (arch == "qwen3") and mc.attention_bias is (arch == "qwen2")
    cls = {"llama": llama.LlamaForCausalLM, "qwen2": qwen2.Qwen2ForCausalLM, "qwen3": qwen3.Qwen3ForCausalLM}[arch]
    model = cls(mc)
    model.load_weights(m.iter_weights())
    weights = dict(m.iter_weights())
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.layers[0].self_attn.qkv_proj.weight[: q.shape[0]], q)


def test_tiny_metadata_equals_gguf_reader(tiny_dir: str) -> None:
    for arch in _TINY:
        path = os.path.join(tiny_dir, f"{arch}.gguf")
        reader = gguf.GGUFReader(path)
        ref = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        ours = read_gguf(path).metadata
        assert ours.keys() == ref.keys()
        for k, v in ref.items():
            assert ours[k] == v, k
            assert type(ours[k]) is type(v), k


def test_dtype_argument(tiny_dir: str) -> None:
    m = read_gguf(os.path.join(tiny_dir, "llama.gguf"))
    full = dict(m.iter_weights())
    for dtype in (torch.float16, torch.bfloat16):
        for name, t in m.iter_weights(dtype):
            assert t.dtype == dtype
            assert torch.equal(t, full[name].to(dtype)), name


# ----------------------------------------------------------------------------- llama3 rope
def _llama3_rope_freqs(head_dim: int, theta: float, factor: float, low: float, high: float,
                       old_len: int) -> np.ndarray:
    """llama.cpp's converter (LlamaModel.generate_extra_tensors), written from its formula."""
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / theta ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old_len / high:
            out.append(1.0)
        elif wavelen > old_len / low:
            out.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("params", [
    (128, 500000.0, 8.0, 1.0, 4.0, 8192),   # Llama 3.1
    (64, 500000.0, 32.0, 1.0, 4.0, 8192),   # Llama 3.2 (1B/3B)
    (128, 500000.0, 4.0, 2.0, 8.0, 4096),   # unusual values: only the band edges matter
])
def test_llama3_rope_freqs_recovered(tmp_path, params) -> None:
    head_dim, theta, factor, low, high, old_len = params
    freqs = _llama3_rope_freqs(head_dim, theta, factor, low, high, old_len)
    path = str(tmp_path / "l3.gguf")
    write_tiny_gguf(path, "llama", hidden=head_dim * 4, head_dim=head_dim, layers=1, inter=256,
                    theta=theta, rope_freqs=freqs)
    m = read_gguf(path)
    scaling = m.hf_config["rope_scaling"]
    assert scaling["rope_type"] == "llama3" and scaling["factor"] == pytest.approx(factor)
    if (low, high, old_len) == (1.0, 4.0, 8192):
        assert (scaling["low_freq_factor"], scaling["high_freq_factor"]) == (1.0, 4.0)
        assert scaling["original_max_position_embeddings"] == 8192
    assert "rope_freqs.weight" not in m.tensor_names
    assert all(not n.startswith("rope_freqs") for n, _ in m.iter_weights())
    # What llama.cpp computes at run time (base / rope_freqs) equals our rotary's frequencies.
    ours = rope_inv_freq(head_dim, theta, RopeScaling.from_hf(scaling))
    base = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    torch.testing.assert_close(ours, base / torch.from_numpy(freqs).double(), rtol=2e-6, atol=0)
    ModelConfig.from_hf(m.hf_config)  # accepted as is


def test_rope_freqs_of_ones_is_no_scaling(tmp_path) -> None:
    path = str(tmp_path / "ones.gguf")
    write_tiny_gguf(path, "llama", layers=1, rope_freqs=np.ones(8, np.float32))
    assert read_gguf(path).hf_config["rope_scaling"] is None


def test_rope_freqs_not_llama3_rejected(tmp_path) -> None:
    path = str(tmp_path / "odd.gguf")
    write_tiny_gguf(path, "llama", layers=1, rope_freqs=np.linspace(1, 3, 8).astype(np.float32)[::-1])
    with pytest.raises(ValueError, match="rope_freqs"):
        read_gguf(path)


# ----------------------------------------------------------------------------- errors
def test_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="not found"):
        read_gguf(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path) -> None:
    p = tmp_path / "model.gguf"
    p.write_text("this is not a model\n")
    with pytest.raises(ValueError, match="not a GGUF file"):
        read_gguf(p)


def test_truncated_file(tmp_path, smollm2_gguf: str) -> None:
    with open(smollm2_gguf, "rb") as f:
        head = f.read(100_000)  # ends inside the vocabulary
    p = tmp_path / "cut.gguf"
    p.write_bytes(head)
    with pytest.raises(ValueError, match="cannot parse GGUF") as e:
        read_gguf(p)
    assert "\n" not in str(e.value)


def test_gguf_package_missing(tmp_path, monkeypatch) -> None:
    p = str(tmp_path / "t.gguf")
    write_tiny_gguf(p, "llama", layers=1)
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` raise ImportError
    with pytest.raises(ValueError, match="pip install gguf"):
        read_gguf(p)


def test_unsupported_architecture(tmp_path) -> None:
    p = str(tmp_path / "phi.gguf")
    w = gguf.GGUFWriter(p, "phi3")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'phi3'"):
        read_gguf(p)


def test_unsupported_tensor_type_names_type_and_tensor(tmp_path) -> None:
    block, size = gguf.GGML_QUANT_SIZES[Q.IQ4_NL]
    iq = np.zeros((64, 64 // block * size), np.uint8)
    p = str(tmp_path / "iq.gguf")
    write_tiny_gguf(p, "llama", layers=1, qtypes={"ffn_gate": Q.Q8_0})
    p2 = str(tmp_path / "iq2.gguf")
    write_tiny_gguf(p2, "llama", layers=1, tied=True,
                    extra=(("output.weight", iq, Q.IQ4_NL),))
    list(read_gguf(p).iter_weights())  # the same file without the odd tensor loads
    m = read_gguf(p2)
    with pytest.raises(ValueError, match=r"'output.weight'.*IQ4_NL"):
        list(m.iter_weights())


def test_unknown_tensor_name(tmp_path) -> None:
    p = str(tmp_path / "fused.gguf")
    write_tiny_gguf(p, "llama", layers=1, extra=(("blk.0.attn_qkv.weight", np.zeros((8, 8), np.float32), None),))
    with pytest.raises(ValueError, match="attn_qkv"):
        read_gguf(p)
