"""Paged attention layer: stores this step's K/V in the cache, then attends over it.

Decode sequences go through the decode path (one query over a long paged context),
prefill chunks through the prefill path (many queries, causal, over a cached prefix).
"""

from __future__ import annotations

import torch

from titaninfer.kernels import reference as ref
from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.layers.dispatch import use_triton


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    kv_already_written: bool = False,
) -> torch.Tensor:
    """q: [T, Hq, D], k/v: [T, Hk, D] -> [T, Hq, D]."""
    if use_triton(q):
        from titaninfer.kernels.decode_attention import paged_decode_attention
        from titaninfer.kernels.prefill_attention import paged_prefill_attention
        from titaninfer.kernels.rotary import write_kv

        if not kv_already_written:
            write_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        out = torch.empty_like(q)
        nd = meta.num_decodes
        if nd:
            # Under CUDA graphs max_seq_len is the static bound the graph was captured with.
            paged_decode_attention(q[:nd], k_cache, v_cache, meta.seq_lens[:nd], meta.block_tables[:nd],
                                   scale, max_seq_len=meta.max_seq_len, out=out[:nd])
        if meta.num_prefills:
            # Decodes own one row each, so the prefill rows start at row nd.
            paged_prefill_attention(q[nd:], k_cache, v_cache, meta.query_start_loc[nd:] - nd,
                                    meta.seq_lens[nd:], meta.block_tables[nd:], meta.max_query_len,
                                    scale, out=out[nd:])
        return out

    if not kv_already_written:
        ref.write_kv_ref(k, v, k_cache, v_cache, meta.slot_mapping)
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if nd:
        out[:nd] = ref.paged_decode_attention_ref(
            q[:nd], k_cache, v_cache, meta.seq_lens[:nd], meta.block_tables[:nd], scale)
    if meta.num_prefills:
        starts = meta.query_start_loc_cpu[nd:]
        base = starts[0]
        out[base:] = ref.paged_attention_ref(
            q[base:], k_cache, v_cache, [s - base for s in starts], meta.seq_lens_cpu[nd:],
            meta.block_tables[nd:], scale)
    return out
