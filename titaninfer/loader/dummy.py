"""Random ("dummy") weights in the shape of a named model, for benchmarks without downloads.

The initialisation keeps activations finite and of unit scale through any depth:
embeddings ~ N(0, 1), projections ~ N(0, 1/fan_in), the projections that write into the
residual stream further scaled by 1/sqrt(2 * num_layers), norms at 1. Seeded, so two runs
(and Hugging Face, given the same state dict) see identical weights.
"""

from __future__ import annotations

import json
import math
import os

import torch
from torch import nn

# Hugging Face config.json fields of the shapes benchmarks use.
DUMMY_SHAPES: dict[str, dict] = {
    "tinyllama-1.1b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=32000, hidden_size=2048,
        intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
        rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "qwen3-0.6b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, hidden_size=1024,
        intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960,
        tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645),
    "llama3-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=8192,
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001),
    "llama3.1-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001),
    "smollm2-135m": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        rms_norm_eps=1e-5, rope_theta=100000.0, max_position_embeddings=8192,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}


def dummy_hf_config(spec: str) -> dict:
    """`spec` is a DUMMY_SHAPES name or the path of a config.json."""
    if spec in DUMMY_SHAPES:
        return dict(DUMMY_SHAPES[spec])
    if spec.endswith(".json") or os.path.isdir(spec):
        path = os.path.join(spec, "config.json") if os.path.isdir(spec) else spec
        if not os.path.isfile(path):
            raise ValueError(f"dummy model config {path} does not exist")
        with open(path) as f:
            return json.load(f)
    raise ValueError(f"unknown dummy model {spec!r}; known: {', '.join(DUMMY_SHAPES)} or dummy:<config.json>")


@torch.no_grad()
def init_dummy_weights(model: nn.Module, num_layers: int, seed: int = 0) -> None:
    """Fill every parameter in place (see the module docstring for the scheme)."""
    first = next(model.parameters())
    gen = torch.Generator(device=first.device).manual_seed(seed)
    residual_scale = 1.0 / math.sqrt(2 * num_layers)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.fill_(1.0)
        elif name.endswith("bias"):
            p.normal_(0.0, 0.02, generator=gen)
        elif "embed_tokens" in name:
            p.normal_(0.0, 1.0, generator=gen)
        else:
            std = 1.0 / math.sqrt(p.shape[1])
            if "o_proj" in name or "down_proj" in name:
                std *= residual_scale
            p.normal_(0.0, std, generator=gen)
