"""The Llama-family decoder (Llama 2/3, TinyLlama, SmolLM2, Mistral), the base of Qwen2/3.

Shapes (gpt-fast style): T = tokens in the flattened batch, H = hidden size,
Hq/Hk = query/KV heads, D = head dim, I = MLP intermediate size, V = vocab.
The forward takes everything explicitly: `model(input_ids, positions, kv_caches, meta)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from titaninfer.config import ModelConfig
from titaninfer.kernels.reference import rotary_ref
from titaninfer.layers.attention import paged_attention
from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.layers.dispatch import use_triton
from titaninfer.layers.embedding import embed_with_sums, embedding_kernel_ok
from titaninfer.layers.linear import (
    Stream,
    linear,
    linear_float32,
    linear_residual,
    norm_linear_rope,
    norm_linear_silu_mul,
    sumsq_slots,
)
from titaninfer.layers.norm import RMSNorm
from titaninfer.layers.rotary import RotaryEmbedding

if TYPE_CHECKING:
    from titaninfer.kernels.skinny_gemm import RopeKVStore

KVCache = tuple[torch.Tensor, torch.Tensor]  # (k_cache, v_cache) of one layer

# Rotary + KV store in the qkv projection's epilogue where the GEMV path runs (batch 1):
# one kernel fewer per layer. False: the separate rotary kernel (A/B, debugging).
ROPE_IN_QKV_PROJECTION = True
# The o and down projections add the residual and sum its squares in their epilogue where
# the GEMV path runs: the next norm reads the summed stream, and where that is cheap
# (`skinny_gemm.presummed_prologue_pays`) it is the next projection's prologue, with no
# norm kernel. False: the add in the norm kernel (A/B, debugging).
RESIDUAL_IN_PROJECTION = True
# The LM head's GEMV stores float32 logits itself (rounded to the model's dtype first, as
# `.float()` of its output): no cast kernel after it. False: the cast (A/B).
FLOAT32_LOGITS_IN_PROJECTION = True
# One Triton kernel gathers the embeddings, zeroes the step's sums-of-squares accumulators
# and writes the embeddings' own sums, so the first layer normalises from those (no PyTorch
# gather and memset at the head of the step, no first norm where the prologue pays).
# False: torch's embedding, a memset and the norm (A/B).
EMBEDDING_KERNEL = True


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size, self.kv_size = cfg.q_size, cfg.kv_size
        self.scale = cfg.head_dim ** -0.5
        # q, k and v in one matmul: [H] -> [q_size + 2 * kv_size]
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.rotary = rotary

    def rope_kv_store(self, positions: torch.Tensor, kv_cache: KVCache,
                      meta: AttentionMetadata) -> RopeKVStore | None:
        """What the qkv projection needs to rotate q/k and store k/v in its own epilogue
        (`layers.linear.norm_linear_rope`), or None where it cannot: off the Triton path,
        and with Qwen3's per-head q/k norm (a norm needs whole heads, a GEMV program has
        a few rows of one)."""
        if not ROPE_IN_QKV_PROJECTION or self.qk_norm or not use_triton(positions):
            return None
        from titaninfer.kernels.skinny_gemm import RopeKVStore

        return RopeKVStore(positions, self.rotary.cos_sin_cache, kv_cache[0], kv_cache[1], meta.slot_mapping,
                           self.q_size, self.kv_size)

    def forward(self, positions: torch.Tensor, qkv: torch.Tensor, kv_cache: KVCache,
                meta: AttentionMetadata, residual: torch.Tensor, rotated: bool = False,
                sumsq_out: torch.Tensor | None = None) -> Stream:
        """qkv: this layer's fused q/k/v projection [T, q_size + 2 * kv_size] (the decoder
        layer computes it, with the input norm fused in) -> the stream residual + o_proj
        output [T, H]. rotated: the projection already rotated q and k and stored k and v
        in the cache. sumsq_out: see `layers.linear.linear_residual`."""
        t = qkv.shape[0]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.reshape(t, self.num_heads, self.head_dim)
        k = k.reshape(t, self.num_kv_heads, self.head_dim)
        v = v.reshape(t, self.num_kv_heads, self.head_dim)
        k_cache, v_cache = kv_cache
        cos_sin = self.rotary.cos_sin_cache
        if rotated:
            o = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale, kv_already_written=True)
        elif use_triton(q):
            from titaninfer.kernels.rotary import rope_and_write_kv

            # Normalises (Qwen3) and rotates q in place and stores rotated k and v straight
            # into the paged cache: one pass.
            # (q and k norms share the model's rms_norm_eps)
            head_norm = (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps) if self.qk_norm else None
            q = rope_and_write_kv(positions, q, k, v, cos_sin, k_cache, v_cache, meta.slot_mapping, head_norm)
            o = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale, kv_already_written=True)
        else:
            if self.qk_norm:
                q = self.q_norm(q)[0]
                k = self.k_norm(k)[0]
            q, k = rotary_ref(positions, q, k, cos_sin)
            o = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale)
        return linear_residual(o.reshape(t, self.q_size), self.o_proj, residual, sumsq_out)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, stream: Stream, norm: RMSNorm, sumsq_out: torch.Tensor | None = None) -> Stream:
        """stream + down(silu(gate) * up) of norm(stream). The SiLU-and-mul runs in the
        gate_up projection's epilogue where the GEMV path runs; as its own op elsewhere."""
        act, summed = norm_linear_silu_mul(stream, norm, self.gate_up_proj)
        return linear_residual(act, self.down_proj, summed, sumsq_out)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, rotary)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, positions: torch.Tensor, stream: Stream, kv_cache: KVCache,
                meta: AttentionMetadata, sumsq_out: torch.Tensor | None = None) -> Stream:
        """sumsq_out: None, or two zeroed rows (`layers.linear.sumsq_slots`) for the residual
        adds of the o and down projections."""
        # Each norm runs inside the projection that follows it (one pass on the skinny path),
        # the residual adds inside the projections before them, and the rotary + KV store
        # inside the qkv projection where it can. First layer: the stream is the embeddings.
        attn_sumsq, mlp_sumsq = (None, None) if sumsq_out is None else (sumsq_out[0], sumsq_out[1])
        rope = self.self_attn.rope_kv_store(positions, kv_cache, meta)
        qkv, summed, rotated = norm_linear_rope(stream, self.input_layernorm, self.self_attn.qkv_proj, rope)
        stream = self.self_attn(positions, qkv, kv_cache, meta, summed, rotated, attn_sumsq)
        return self.mlp(stream, self.post_attention_layernorm, mlp_sumsq)


class LlamaForCausalLM(nn.Module):
    """Decoder + LM head. Subclasses change only configuration (see qwen2.py, qwen3.py)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling)
        self.layers = nn.ModuleList(DecoderLayer(cfg, self.rotary) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[KVCache], meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: [T] -> final hidden states [T, H] (normed)."""
        n_sums = 2 * len(self.layers)
        sumsq: torch.Tensor | None
        if RESIDUAL_IN_PROJECTION and EMBEDDING_KERNEL and embedding_kernel_ok(input_ids, self.embed_tokens):
            stream, sumsq = embed_with_sums(input_ids, self.embed_tokens, n_sums)
        else:
            stream = Stream(self.embed_tokens(input_ids))
            sumsq = sumsq_slots(stream.x, n_sums) if RESIDUAL_IN_PROJECTION else None
        for i, (layer, kv_cache) in enumerate(zip(self.layers, kv_caches, strict=True)):
            stream = layer(positions, stream, kv_cache, meta, None if sumsq is None else sumsq[2 * i:2 * i + 2])
        return self.norm(stream.x, stream.residual)[0]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [N, H] -> float32 logits [N, V]."""
        if FLOAT32_LOGITS_IN_PROJECTION:
            return linear_float32(hidden, self.lm_head)
        return linear(hidden, self.lm_head).float()

    # ------------------------------------------------------------------ weights
    # Hugging Face names -> (our parameter, shard index within a fused parameter).
    _STACKED = {
        "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def _shard_range(self, fused: str, index: int) -> tuple[int, int]:
        cfg = self.config
        if fused == "qkv_proj":
            sizes = [cfg.q_size, cfg.kv_size, cfg.kv_size]
        else:
            sizes = [cfg.intermediate_size, cfg.intermediate_size]
        start = sum(sizes[:index])
        return start, start + sizes[index]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors into our (partly fused) parameters.

        Raises ValueError on a missing, unexpected or mis-shaped tensor, so a wrong or
        truncated checkpoint fails loudly instead of generating garbage."""
        params = dict(self.named_parameters())
        expected = set(params)
        if self.config.tie_word_embeddings:
            expected.discard("lm_head.weight")
        filled: dict[str, int] = {}
        need_parts = {name: (3 if "qkv_proj.weight" in name or "qkv_proj.bias" in name else
                             2 if "gate_up_proj" in name else 1) for name in params}
        for hf_name, tensor in weights:
            name = hf_name.removeprefix("model.")
            if "rotary_emb.inv_freq" in name:
                continue
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            target, rows = name, None
            for short, (fused, index) in self._STACKED.items():
                if f".{short}." in name:
                    target = name.replace(short, fused)
                    rows = self._shard_range(fused, index)
                    break
            if target not in params:
                raise ValueError(f"unexpected weight {hf_name!r} for {type(self).__name__}")
            param = params[target]
            dst = param.data if rows is None else param.data[rows[0]:rows[1]]
            if tuple(dst.shape) != tuple(tensor.shape):
                raise ValueError(f"weight {hf_name!r} has shape {tuple(tensor.shape)}, expected {tuple(dst.shape)}")
            dst.copy_(tensor.to(dst.dtype))
            filled[target] = filled.get(target, 0) + 1
        missing = sorted(n for n in expected if filled.get(n, 0) < need_parts[n])
        if missing:
            raise ValueError(f"checkpoint is missing weights: {', '.join(missing[:5])}"
                             + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
