"""Paged prefill attention: causal flash attention for a varlen batch of prefill chunks
whose queries sit at the END of each sequence's context (context = cached prefix + this
chunk, all already in the paged cache). Semantics: `reference.paged_attention_ref`.

Sequence i owns query rows query_start_loc[i] .. query_start_loc[i+1]; its q_len queries
are at positions seq_lens[i] - q_len .. seq_lens[i] - 1, and query p sees keys 0..p.

Work decomposition. A program owns (query head h, BLOCK_M queries of sequence b). Its
keys split into two ranges: [0, full_end) lies before the tile's first query, so every
row sees it and the loop runs unmasked; [full_end, last query] crosses the diagonal and
is masked. Both loops are online softmax (base 2) with tensor-core dots. Grid axis 0 is
the query head, so the programs of one KV head (GQA group) and query block run next to
each other and read the same K/V tiles while they are in L2. Programs whose query block
lies past their sequence's q_len exit at once (the grid is sized by max_query_len).

FLOPs (the roofline number): 4 * D * Hq * sum over queries of (visible keys) - the
causal QK^T and PV products actually needed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import INTERPRET as _INTERPRET
from titaninfer.kernels.triton_common import check_paged_inputs, round_to


@triton.jit
def _attend(
    q, acc, l_i, m_i, q_pos, lo, hi,
    kc_ptr, vc_ptr, bt_row, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2, kvh, qk_scale_log2,
    HEAD_DIM: tl.constexpr, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL_MASK: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    """Online-softmax accumulation of keys [lo, hi) into (acc, l_i, m_i)."""
    d = tl.arange(0, HEAD_DIM)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        if CAUSAL_MASK:
            n_ok = n < hi
            blk = tl.load(bt_row + n // KV_BLOCK, mask=n_ok, other=0).to(tl.int64)
        else:
            blk = tl.load(bt_row + n // KV_BLOCK).to(tl.int64)
        off = n % KV_BLOCK
        k_ptrs = kc_ptr + (blk * kc_s0 + off * kc_s1 + kvh * kc_s2)[:, None] + d[None, :]
        v_ptrs = vc_ptr + (blk * vc_s0 + off * vc_s1 + kvh * vc_s2)[:, None] + d[None, :]
        if CAUSAL_MASK:
            k = tl.load(k_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
        s = tl.dot(q, tl.trans(k.to(DOT_DTYPE))) * qk_scale_log2  # [BLOCK_M, BLOCK_N]
        if CAUSAL_MASK:
            s = tl.where((n[None, :] <= q_pos[:, None]) & n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if CAUSAL_MASK:
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE))
        m_i = m_new
    return acc, l_i, m_i


# The per-sequence tables are slices at a row offset that changes every step (their
# alignment too) and the block-table width changes with the longest sequence: no
# specialisation on them, so one variant serves every step.
@triton.jit(do_not_specialize=["qsl_ptr", "seq_lens_ptr", "bt_ptr", "bt_s0"])
def _prefill_kernel(
    q_ptr, kc_ptr, vc_ptr, qsl_ptr, seq_lens_ptr, bt_ptr, out_ptr,
    qk_scale_log2,
    q_s0, q_s1, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2, bt_s0, o_s0, o_s1,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, KV_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_DTYPE: tl.constexpr, EMULATE_RNE: tl.constexpr,
):
    h = tl.program_id(0)
    mb = tl.program_id(1)
    b = tl.program_id(2)
    q_start = tl.load(qsl_ptr + b)
    q_len = tl.load(qsl_ptr + b + 1) - q_start
    if mb * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + b)
    first_q = seq_len - q_len + mb * BLOCK_M  # position of the tile's first query
    kvh = h // GROUP

    m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < q_len
    q_pos = first_q - mb * BLOCK_M + m
    d = tl.arange(0, HEAD_DIM)
    rows = (q_start + m).to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * q_s0 + h * q_s1 + d[None, :],
                mask=m_ok[:, None], other=0.0).to(DOT_DTYPE)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    bt_row = bt_ptr + b.to(tl.int64) * bt_s0
    # Key tiles wholly at or before the first query: visible to every row.
    full_end = (first_q + 1) // BLOCK_N * BLOCK_N
    hi = tl.minimum(first_q + BLOCK_M, seq_len)  # one past the tile's last real query
    acc, l_i, m_i = _attend(q, acc, l_i, m_i, q_pos, 0, full_end,
                            kc_ptr, vc_ptr, bt_row, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2,
                            kvh, qk_scale_log2, HEAD_DIM, KV_BLOCK, BLOCK_N, False, DOT_DTYPE)
    acc, l_i, m_i = _attend(q, acc, l_i, m_i, q_pos, full_end, hi,
                            kc_ptr, vc_ptr, bt_row, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2,
                            kvh, qk_scale_log2, HEAD_DIM, KV_BLOCK, BLOCK_N, True, DOT_DTYPE)
    # Every real row saw key 0, so l_i > 0; padded rows are not stored.
    o = acc / l_i[:, None]
    tl.store(out_ptr + rows[:, None] * o_s0 + h * o_s1 + d[None, :],
             round_to(o, out_ptr.dtype.element_ty, EMULATE_RNE), mask=m_ok[:, None])


def prefill_config(head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) by head dim (H100, bf16)."""
    if _INTERPRET:
        return 32, 32, 4, 1  # small tiles: several of them in tiny CPU tests
    # Measured on H100 (bench --sweep): D=128 (128,128,8,3) 52% of the bf16 matmul peak;
    # D=64 (64,64,4,3) 34%; D=256 (128,64,8,2) 32%.
    if head_dim <= 64:
        return 64, 64, 4, 3
    if head_dim <= 128:
        return 128, 128, 8, 3
    return 128, 64, 8, 2


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """q: [T, Hq, D] -> [T, Hq, D] (q's dtype; written into `out` when given).

    query_start_loc: [B+1] int32 (rows of q per sequence, starting at 0); seq_lens: [B]
    int32 (context incl. this chunk, already in the cache, seq_lens >= q_len);
    block_tables: [B, max_blocks] int32; max_query_len: a static bound on the q_lens.
    Rows of q not owned by any sequence are left unwritten. D: power of two in [16, 256].
    """
    t, hq, d = q.shape
    kv_block, hk = check_paged_inputs(q, k_cache, v_cache)
    b = seq_lens.shape[0]
    if query_start_loc.shape != (b + 1,) or block_tables.dim() != 2 or block_tables.shape[0] != b:
        raise ValueError(f"query_start_loc {tuple(query_start_loc.shape)}, seq_lens "
                         f"{tuple(seq_lens.shape)}, block_tables {tuple(block_tables.shape)} "
                         "disagree")
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.stride(-1) != 1:
        raise ValueError(f"out must be {tuple(q.shape)} with a contiguous last dim")
    if b == 0 or t == 0 or max_query_len <= 0:
        return out

    block_m, block_n, num_warps, num_stages = config or prefill_config(d)
    dot_dtype = tl.float32 if _INTERPRET else (
        tl.bfloat16 if k_cache.dtype == torch.bfloat16 else tl.float16)
    grid = (hq, triton.cdiv(max_query_len, block_m), b)
    _prefill_kernel[grid](
        q, k_cache, v_cache, query_start_loc, seq_lens, block_tables, out,
        scale * 1.4426950408889634,  # log2(e): softmax in base 2
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1),
        GROUP=hq // hk, HEAD_DIM=d, KV_BLOCK=kv_block, BLOCK_M=block_m, BLOCK_N=block_n,
        DOT_DTYPE=dot_dtype, EMULATE_RNE=_INTERPRET,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
