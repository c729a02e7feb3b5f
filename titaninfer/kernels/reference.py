"""Plain-PyTorch references for every kernel family.

They define what each Triton kernel must compute, run the model on a CPU, and are what the
kernel tests compare against. Math runs in float32 whatever the input dtype; outputs come
back in the input dtype.

KV cache layout (shared with the Triton kernels): one tensor per layer for K and one for V,
each [num_blocks, block_size, num_kv_heads, head_dim]; token slot s lives at block
s // block_size, offset s % block_size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """out = rmsnorm(x + residual) * weight; also returns the new residual (x + residual).

    The sum is rounded to x's dtype before it is normalised, as Hugging Face models do
    (they add the residual in the activation dtype), so bf16 runs agree with them."""
    if residual is not None:
        residual = (x.float() + residual.float()).to(x.dtype)
        x = residual
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    # Round the normalised value before the weight multiply, as Hugging Face does.
    normed = (xf * torch.rsqrt(var + eps)).to(x.dtype)
    return (normed.float() * weight.float()).to(x.dtype), residual


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2 * d] holding gate then up; returns silu(gate) * up: [..., d]."""
    d = x.shape[-1] // 2
    xf = x.float()
    return (F.silu(xf[..., :d]) * xf[..., d:]).to(x.dtype)


def rotary_ref(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox-style rotary embedding (rotate halves), as Hugging Face Llama/Qwen apply it.

    positions: [T]; q: [T, Hq, D]; k: [T, Hk, D]; cos_sin_cache: [max_pos, D] float32 with
    cos in the first D/2 columns and sin in the last D/2.
    """
    d2 = cos_sin_cache.shape[-1] // 2
    cs = cos_sin_cache[positions.long()]
    cos, sin = cs[:, None, :d2], cs[:, None, d2:]

    def rot(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        x1, x2 = xf[..., :d2], xf[..., d2:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

    return rot(q), rot(k)


def write_kv_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store k, v ([T, Hk, D]) at their slots. Slot -1 means 'do not store' (padding)."""
    nb, bs, hk, d = k_cache.shape
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(nb * bs, hk, d)[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(nb * bs, hk, d)[slots] = v[keep].to(v_cache.dtype)


def _gather_kv(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    nb, bs, hk, d = cache.shape
    num_blocks = (seq_len + bs - 1) // bs
    blocks = cache[block_table[:num_blocks].long()]  # [nblk, bs, hk, d]
    return blocks.reshape(num_blocks * bs, hk, d)[:seq_len]


def paged_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    query_start_loc: list[int],
    seq_lens: list[int],
    block_tables: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context.

    Sequence i owns queries q[query_start_loc[i]:query_start_loc[i+1]], which sit at the
    last positions of its context of seq_lens[i] tokens (already written to the cache).
    q: [T, Hq, D] -> out [T, Hq, D]. Handles decode (1 query), prefill, and chunked prefill
    over a cached prefix alike; GQA by grouping query heads over their KV head.
    """
    out = torch.empty_like(q)
    hq, d = q.shape[1], q.shape[2]
    hk = k_cache.shape[2]
    group = hq // hk
    for i, seq_len in enumerate(seq_lens):
        start, end = query_start_loc[i], query_start_loc[i + 1]
        q_len = end - start
        if q_len == 0:
            continue
        k = _gather_kv(k_cache, block_tables[i], seq_len).float()  # [L, hk, d]
        v = _gather_kv(v_cache, block_tables[i], seq_len).float()
        qi = q[start:end].float().view(q_len, hk, group, d)
        scores = torch.einsum("qhgd,khd->hgqk", qi, k) * scale  # [hk, g, q, L]
        q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
        k_pos = torch.arange(seq_len, device=q.device)
        mask = k_pos[None, :] > q_pos[:, None]
        scores.masked_fill_(mask, float("-inf"))
        probs = scores.softmax(-1)
        o = torch.einsum("hgqk,khd->qhgd", probs, v)
        out[start:end] = o.reshape(q_len, hq, d).to(q.dtype)
    return out


def paged_decode_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq_lens: torch.Tensor,
    block_tables: torch.Tensor, scale: float,
) -> torch.Tensor:
    """Batched decode: one query per sequence (q: [B, Hq, D]) over seq_lens[b] cached tokens;
    a row with seq_len 0 gives zeros. Vectorised over the batch (padding masked): one
    index_select per cache (several times faster on a CPU than advanced indexing) and one
    fused SDPA call, the query heads of a KV head standing in for its query rows."""
    b, hq, d = q.shape
    nb, bs, hk, _ = k_cache.shape
    group = hq // hk
    max_len = max(int(seq_lens.max().item()), 1)
    max_blocks = (max_len + bs - 1) // bs
    length = max_blocks * bs
    tables = block_tables[:, :max_blocks].reshape(-1).long()
    k = k_cache.index_select(0, tables).view(b, length, hk, d).float()
    v = v_cache.index_select(0, tables).view(b, length, hk, d).float()
    pad = torch.arange(length, device=q.device)[None, :] >= seq_lens[:, None].to(q.device)
    # Slots past a sequence's end hold whatever the cache had (maybe NaN): zero them, or
    # NaN scores / 0 * NaN in the weighted sum would poison the row. Only those rows are
    # touched (a full masked_fill would cost as much as the attention).
    stale = pad.view(-1).nonzero().view(-1)
    k.view(-1, hk * d).index_fill_(0, stale, 0.0)
    v.view(-1, hk * d).index_fill_(0, stale, 0.0)
    keep = ~pad
    keep[:, 0] = True  # a seq_len-0 row must not be all-masked (NaN); zeroed below
    o = F.scaled_dot_product_attention(q.float().view(b, hk, group, d), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=keep[:, None, None, :], scale=scale)
    o = o.reshape(b, hq, d).masked_fill((seq_lens == 0).to(q.device)[:, None, None], 0.0)
    return o.to(q.dtype)


def sample_tokens_ref(
    logits: torch.Tensor, temperature: torch.Tensor, min_p: torch.Tensor,
    seeds: torch.Tensor, offsets: torch.Tensor,
) -> torch.Tensor:
    """logits [B, V] -> token ids [B] int64. Row b: the first argmax where temperature <= 0;
    otherwise a draw from softmax(logits / T) restricted to tokens with
    p >= min_p * p_max (min_p 0 keeps all). The draw is seeded by (seeds[b], offsets[b]),
    so it is deterministic; the Triton kernel draws from the same distribution with its
    own random stream (Philox), so the two agree in distribution, not token by token."""
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    for b in range(logits.shape[0]):
        row = logits[b].float().cpu()
        t = float(temperature[b])
        if t <= 0:
            out[b] = torch.argmax(row)
            continue
        probs = torch.softmax(row / t, dim=-1)
        probs = torch.where(probs >= float(min_p[b]) * probs.max(), probs, 0.0)
        gen = torch.Generator().manual_seed(
            (int(seeds[b]) * 0x9E3779B97F4A7C15 + int(offsets[b])) % 2**64)
        out[b] = torch.multinomial(probs, 1, generator=gen)[0]
    return out.to(logits.device)
