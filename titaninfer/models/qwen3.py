"""Qwen3: the Llama decoder with a per-head RMSNorm on q and k before rotary (config.qk_norm)."""

from __future__ import annotations

from titaninfer.models.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    pass
