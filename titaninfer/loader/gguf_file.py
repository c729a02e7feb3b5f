"""Read a GGUF file (llama.cpp's format) as a Hugging Face-style config plus HF-named tensors.

Data flow: `read_gguf(path)` parses the header once with a small reader of our own (the
tensor data stays memory-mapped; gguf's GGUFReader builds a numpy view per array element and
takes seconds on a 49k-token vocabulary, this takes ~0.1 s),
turns llama.cpp's metadata keys into a config.json-like dict (`hf_config`, fed to
`ModelConfig.from_hf`) and maps every tensor name to its Hugging Face name. Tensors are only
dequantized when `GGUFModel.iter_weights()` reaches them, one at a time, so peak memory is
one float tensor, not the whole model.

Two llama.cpp conventions are undone here so the rest of the engine only sees HF layouts:
- for the `llama` architecture the converter permutes the rows of q and k (it turns HF's
  "rotate halves" RoPE layout into GGML's interleaved one); `_unpermute` reverses it;
- Llama 3.1-style RoPE scaling is stored as a `rope_freqs.weight` tensor of per-frequency
  divisors, not as config; `_llama3_scaling_from_freqs` recovers the config from it.

`gguf` is imported lazily: only GGUF users need it.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

# GGUF architecture -> (HF architecture class, HF model_type).
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}

_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}

_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")

# Tensor types we dequantize (all through gguf.quants, which is the reference for the format).
_SUPPORTED_TYPES = frozenset({
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
})

_ROPE_FREQS = "rope_freqs.weight"


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ValueError("reading .gguf files needs the 'gguf' package: pip install gguf") from None
    return gguf


def hf_tensor_name(gguf_name: str) -> str:
    """llama.cpp tensor name -> Hugging Face name; ValueError for a name we cannot map."""
    base, _, suffix = gguf_name.rpartition(".")
    if base in _GLOBAL_TENSORS and suffix in ("weight", "bias"):
        return f"{_GLOBAL_TENSORS[base]}.{suffix}"
    m = _LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_TENSORS:
        return f"model.layers.{m.group(1)}.{_LAYER_TENSORS[m.group(2)]}.{m.group(3)}"
    raise ValueError(f"unsupported GGUF tensor {gguf_name!r} (no Hugging Face equivalent known)")


def _unpermute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation.

    The converter views the rows of each head as [2, D/2] (HF: first half, second half of
    the rotated dims) and transposes to [D/2, 2] (interleaved pairs). We do the reverse:
    view as [heads, D/2, 2], swap back to [heads, 2, D/2]. Works for weights [rows, H]
    and biases [rows]. (numpy, not torch: a strided torch copy can stall on a busy CPU's
    thread pool, and this runs once per layer at load time.)"""
    rows = w.shape[0]
    return np.ascontiguousarray(
        w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2)).reshape(w.shape)


def _llama3_freq_factors(inv_freq: np.ndarray, factor: float, low: float, high: float,
                         old_len: float) -> np.ndarray:
    """The divisors llama.cpp stores in rope_freqs for Llama 3.1 scaling."""
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - low) / (high - low)
    medium = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old_len / high, 1.0, np.where(wavelen > old_len / low, factor, medium))


def _llama3_scaling_from_freqs(freqs: np.ndarray, theta: float, rope_dim: int) -> dict[str, Any] | None:
    """Recover HF's llama3 rope_scaling dict from a rope_freqs tensor (None: all ones).

    Only the ratios old_len/low and old_len/high change the frequencies, so we fix
    low_freq_factor = 1 (as every Llama 3.x does) and fit the rest from the blended band;
    the result is verified by recomputing the tensor, so an unusual file fails loudly."""
    freqs = freqs.astype(np.float64)
    factor = float(freqs.max())
    if abs(factor - 1.0) < 1e-6:
        return None
    inv_freq = theta ** (-np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim)
    if freqs.shape != inv_freq.shape:
        raise ValueError(f"rope_freqs has {freqs.size} entries, expected {inv_freq.size}")
    medium = (freqs > 1 + 1e-6) & (freqs < factor - 1e-6 * factor)
    low, high, old_len = 1.0, 4.0, 8192.0  # Llama 3.1's values: used when no band to fit
    if medium.sum() >= 2:
        smooth = (1 / freqs[medium] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(inv_freq[medium] / (2 * math.pi), smooth, 1)
        high = 1 - 1 / intercept
        old_len = -slope / intercept
    # Prefer tidy numbers (8192, not 8191.9997) when they reproduce the tensor just as well.
    for high_c, old_len_c in ((round(high, 3), round(old_len)), (high, round(old_len))):
        if np.allclose(_llama3_freq_factors(inv_freq, factor, low, high_c, old_len_c), freqs, rtol=1e-4):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": float(high_c),
                    "original_max_position_embeddings": int(old_len_c)}
    raise ValueError("rope_freqs.weight does not follow Llama 3 rope scaling; cannot load it")


class _TensorInfo(NamedTuple):
    name: str
    shape: tuple[int, ...]  # numpy order (slowest dim first): [rows, cols] for a matrix
    qtype: int  # GGMLQuantizationType value
    offset: int  # absolute byte offset in the file


# GGUF value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _HeaderReader:
    """Sequential little-endian reader over the file's bytes (GGUF v2/v3)."""

    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("Q")
        raw = bytes(self.buf[self.pos:self.pos + n])
        if len(raw) != n:
            raise ValueError("file ends inside a string")
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            item_type, count = self.scalar("I"), self.scalar("Q")
            if item_type in _SCALARS:  # one numpy call instead of `count` struct calls
                dtype = np.dtype("<" + _SCALARS[item_type])
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
                self.pos += count * dtype.itemsize
                return arr.tolist()
            return [self.value(item_type) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")


def _parse_header(buf: memoryview) -> tuple[dict[str, Any], list[_TensorInfo]]:
    r = _HeaderReader(buf)
    r.pos = 4  # magic, checked by the caller
    version = r.scalar("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3; big-endian files neither)")
    num_tensors, num_kv = r.scalar("Q"), r.scalar("Q")
    metadata: dict[str, Any] = {}
    for _ in range(num_kv):
        key = r.string()
        metadata[key] = r.value(r.scalar("I"))
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(num_tensors):
        name = r.string()
        dims = [r.scalar("Q") for _ in range(r.scalar("I"))]
        raw.append((name, tuple(reversed(dims)), r.scalar("I"), r.scalar("Q")))
    align = int(metadata.get("general.alignment", 32))
    if align <= 0:
        raise ValueError(f"general.alignment must be positive, got {align}")
    data_start = (r.pos + align - 1) // align * align
    return metadata, [_TensorInfo(n, shape, q, data_start + off) for n, shape, q, off in raw]


@dataclass
class GGUFModel:
    """A parsed GGUF file.

    Invariants: `hf_config` is accepted by `ModelConfig.from_hf`; `tensor_names` are the HF
    names `iter_weights` yields, in file order (no `lm_head.weight` when
    `hf_config["tie_word_embeddings"]`); `metadata` holds every key/value of the file as
    plain Python values (str, int, float, bool, lists of those)."""

    path: str
    architecture: str  # the GGUF architecture: llama | qwen2 | qwen3
    hf_config: dict[str, Any]
    metadata: dict[str, Any]
    tensor_names: list[str]
    _data: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.uint8))
    _tensors: list[_TensorInfo] = field(repr=False, default_factory=list)

    def iter_weights(self, dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (hf_name, tensor) one at a time, dequantized and in HF layout.

        ValueError names the tensor and type when a tensor type is not supported."""
        cfg = self.hf_config
        permute = self.architecture == "llama"
        for info in self._tensors:
            if info.name == _ROPE_FREQS:
                continue  # already folded into hf_config["rope_scaling"]
            name = hf_tensor_name(info.name)
            array = _dequantize(self._data, info, keep_f16=dtype != torch.float32)
            if permute and ".self_attn.q_proj." in name:
                array = _unpermute(array, cfg["num_attention_heads"])
            elif permute and ".self_attn.k_proj." in name:
                array = _unpermute(array, cfg["num_key_value_heads"])
            yield name, torch.from_numpy(array).to(dtype)


def _dequantize(data: np.ndarray, info: _TensorInfo, keep_f16: bool = False) -> np.ndarray:
    """The tensor as a writable, C-contiguous float array (float16 kept when `keep_f16`)."""
    gguf = _import_gguf()
    try:
        qtype = gguf.GGMLQuantizationType(info.qtype)
        kind = qtype.name
    except ValueError:  # a type newer than the installed gguf package
        kind = f"type id {info.qtype}"
    if kind not in _SUPPORTED_TYPES:
        raise ValueError(f"GGUF tensor {info.name!r} has unsupported type {kind} "
                         f"(supported: {', '.join(sorted(_SUPPORTED_TYPES))})")
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    num_elements = math.prod(info.shape)
    nbytes = num_elements // block_size * type_size
    if not num_elements or info.shape[-1] % block_size or info.offset + nbytes > data.size:
        raise ValueError(f"GGUF tensor {info.name!r} ({kind}, shape {list(info.shape)}) is truncated or misshaped")
    raw = data[info.offset:info.offset + nbytes]
    out: np.ndarray
    if kind == "F32":
        out = raw.view(np.float32).reshape(info.shape)
    elif kind == "F16":
        out = raw.view(np.float16).reshape(info.shape)
        if not keep_f16:
            out = out.astype(np.float32)
    else:
        rows = raw.reshape(*info.shape[:-1], info.shape[-1] // block_size * type_size)
        out = gguf.quants.dequantize(rows, qtype)
    # The file is mapped read-only: copy unless dequantization already made a fresh array.
    return np.require(out, requirements=["C", "W"])


def read_gguf(path: str | os.PathLike[str]) -> GGUFModel:
    """Parse a GGUF file's header; ValueError with a one-line reason when it cannot be used."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"GGUF file not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
    _import_gguf()  # fail early with the install hint
    # A plain ndarray view of the mapping: slicing a np.memmap subclass costs a Python-level
    # __array_finalize__ per view, which dominated dequantization time.
    data = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    try:
        metadata, infos = _parse_header(memoryview(data))  # type: ignore[arg-type]
    except (struct.error, ValueError, UnicodeDecodeError, MemoryError) as e:
        raise ValueError(f"cannot parse GGUF file {path}: {e}".splitlines()[0]) from None
    arch = metadata.get("general.architecture")
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unsupported GGUF architecture {arch!r} (supported: {', '.join(_ARCHITECTURES)})")
    tensors = {t.name: t for t in infos}
    if len(tensors) != len(infos):
        raise ValueError(f"GGUF file {path} names a tensor twice")
    names = [hf_tensor_name(t.name) for t in infos if t.name != _ROPE_FREQS]
    hf_config = _hf_config(arch, metadata, tensors, data)
    if hf_config["tie_word_embeddings"]:
        names = [n for n in names if n != "lm_head.weight"]
    return GGUFModel(path=path, architecture=arch, hf_config=hf_config, metadata=metadata,
                     tensor_names=names, _data=data, _tensors=infos)


def _hf_config(arch: str, md: dict[str, Any], tensors: dict[str, _TensorInfo],
               data: np.ndarray) -> dict[str, Any]:
    def get(key: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{key}", default)

    def need(key: str) -> Any:
        if f"{arch}.{key}" not in md:
            raise ValueError(f"GGUF metadata lacks {arch}.{key}")
        return md[f"{arch}.{key}"]

    if "token_embd.weight" not in tensors:
        raise ValueError("GGUF file has no token_embd.weight tensor")
    hidden = int(need("embedding_length"))
    num_heads = int(need("attention.head_count"))
    num_kv_heads = int(get("attention.head_count_kv") or num_heads)
    head_dim = int(get("attention.key_length") or hidden // num_heads)
    theta = float(get("rope.freq_base", 10000.0))
    vocab_size = int(tensors["token_embd.weight"].shape[0])  # [V, H]

    rope_scaling: dict[str, Any] | None = None
    scaling_type = get("rope.scaling.type")
    if _ROPE_FREQS in tensors:
        freqs = _dequantize(data, tensors[_ROPE_FREQS])
        rope_scaling = _llama3_scaling_from_freqs(freqs.reshape(-1), theta,
                                                  int(get("rope.dimension_count") or head_dim))
    elif scaling_type not in (None, "none"):
        rope_scaling = {"rope_type": scaling_type, "factor": float(get("rope.scaling.factor", 1.0))}
        if get("rope.scaling.original_context_length"):
            rope_scaling["original_max_position_embeddings"] = int(get("rope.scaling.original_context_length"))

    eos = md.get("tokenizer.ggml.eos_token_id")
    eot = md.get("tokenizer.ggml.eot_token_id")
    eos_ids = [i for i in dict.fromkeys((eos, eot)) if i is not None]
    hf_arch, model_type = _ARCHITECTURES[arch]
    return {
        "architectures": [hf_arch],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab_size,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": int(get("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else (eos_ids or None),
        "name_or_path": md.get("general.name", ""),
    }
