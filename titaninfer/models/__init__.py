"""Model registry: a checkpoint's `architectures` name -> the class that runs it."""

from __future__ import annotations

from torch import nn

from titaninfer.config import ModelConfig
from titaninfer.models.llama import LlamaForCausalLM
from titaninfer.models.qwen2 import Qwen2ForCausalLM
from titaninfer.models.qwen3 import Qwen3ForCausalLM

MODEL_REGISTRY: dict[str, type[LlamaForCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
    "Qwen3ForCausalLM": Qwen3ForCausalLM,
}


def resolve_architecture(arch: str) -> type[LlamaForCausalLM]:
    try:
        return MODEL_REGISTRY[arch]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {arch!r}; supported: {', '.join(sorted(MODEL_REGISTRY))}") from None


def build_model(cfg: ModelConfig) -> nn.Module:
    return resolve_architecture(cfg.architecture)(cfg)
