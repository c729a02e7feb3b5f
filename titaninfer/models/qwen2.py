"""Qwen2 / Qwen2.5: the Llama decoder with bias on the q/k/v projections (set in the config)
and, for the small models, tied embeddings."""

from __future__ import annotations

from titaninfer.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    pass
