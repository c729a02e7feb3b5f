"""Neox rotary embedding fused with the KV-cache store.

`rope_and_write_kv` rotates q in place and writes rotate(k) and v straight into the paged
cache, so the attention layer's rotary, k/v copies and cache scatter are one pass: each of
q, k, v is read once and q, k, v are written once (k and v only into the cache).
Semantics: `reference.rotary_ref` then `reference.write_kv_ref` (rotated k is rounded to
k's dtype, then to the cache's); with `head_norm`, Qwen3's per-head q/k RMSNorm
(`reference.rms_norm_ref` over D) comes first, in the same pass. `write_kv` alone is the
store without rotation.

Layouts: q [T, Hq, D], k/v [T, Hk, D] may be strided views into a fused qkv output (the
last dim must be contiguous); cos_sin_cache [max_pos, D] float32 = [cos | sin];
k_cache/v_cache [num_blocks, block_size, Hk, D]; slot s -> block s // block_size, offset
s % block_size; slot -1 is padding and is not stored (its q is still rotated).

A program owns one token and all of its heads ([BLOCK_H, D/2] tiles per half), so the
token's cos/sin row is loaded once and reused by every head.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import INTERPRET as _INTERPRET
from titaninfer.kernels.triton_common import (
    await_producer,
    pdl_launch_kwargs,
    pdl_mode,
    round_to,
)

# Load the positions, cos/sin and KV slots before the PDL wait (they are step inputs, copied
# in before the step's first kernel; no kernel of a step may write them). False: after it,
# as before (A/B).
EARLY_STEP_INPUTS = True


@triton.jit
def _rotate_heads(
    src_ptr, s_tok, s_head, n_heads, cos, sin, half,
    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, h0,
    nw_ptr, eps, HEAD_NORM: tl.constexpr, dtype: tl.constexpr, EMULATE_RNE: tl.constexpr,
):
    """Load heads h0..h0+BLOCK_H of one token, RMS-normalise each head first when HEAD_NORM
    (Qwen3's q/k norm, `rms_norm_ref` roundings: normed and weighted values rounded to
    dtype), and rotate them: returns (y1, y2) float32."""
    heads = h0 + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_HALF)
    mask = (heads < n_heads)[:, None] & (d < half)[None, :]
    ptr = src_ptr + s_tok + heads[:, None] * s_head + d[None, :]
    x1 = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(ptr + half, mask=mask, other=0.0).to(tl.float32)
    if HEAD_NORM:
        var = (tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * half)
        rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))[:, None]
        w1 = tl.load(nw_ptr + d, mask=d < half, other=0.0).to(tl.float32)[None, :]
        w2 = tl.load(nw_ptr + half + d, mask=d < half, other=0.0).to(tl.float32)[None, :]
        x1 = round_to(round_to(x1 * rstd, dtype, EMULATE_RNE).to(tl.float32) * w1, dtype, EMULATE_RNE)
        x2 = round_to(round_to(x2 * rstd, dtype, EMULATE_RNE).to(tl.float32) * w2, dtype, EMULATE_RNE)
        x1 = x1.to(tl.float32)
        x2 = x2.to(tl.float32)
    return rotate_pair(x1, x2, cos, sin), rotate_pair(x2, -x1, cos, sin), mask


@triton.jit
def rotate_pair(x, partner, cos, sin):
    """x * cos - partner * sin with one explicit fused multiply-add, so every kernel that
    rotates (this one, the qkv GEMV's epilogue) rounds identically whatever the compiler
    would contract on its own."""
    return tl.fma(x, cos, -(partner * sin))


@triton.jit
def _rope_kv_kernel(
    pos_ptr, q_ptr, k_ptr, v_ptr, cs_ptr, kc_ptr, vc_ptr, slot_ptr, qn_ptr, kn_ptr, eps,
    n_q_heads, n_kv_heads, half, block_size,
    q_s0, q_s1, k_s0, k_s1, v_s0, v_s1, cs_s0,
    kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2,
    ROTATE: tl.constexpr, HEAD_NORM: tl.constexpr,
    BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr,
    EMULATE_RNE: tl.constexpr, PDL: tl.constexpr, EARLY_INPUTS: tl.constexpr,
):
    if not EARLY_INPUTS:
        await_producer(PDL)
    tok = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, BLOCK_HALF)
    d_ok = d < half
    # Step inputs (the runner copies them in before the step's first kernel; no kernel of
    # the step writes them) load before the wait, so the position -> cos/sin chain of loads
    # overlaps the projection before instead of following it.
    slot = tl.load(slot_ptr + tok).to(tl.int64)
    if ROTATE:
        pos = tl.load(pos_ptr + tok).to(tl.int64)
        cos = tl.load(cs_ptr + pos * cs_s0 + d, mask=d_ok, other=0.0)[None, :]
        sin = tl.load(cs_ptr + pos * cs_s0 + half + d, mask=d_ok, other=0.0)[None, :]
    if EARLY_INPUTS:
        await_producer(PDL)  # q, k, v come from the projection just before
    blk = slot // block_size
    off = slot % block_size
    kc_tok = kc_ptr + blk * kc_s0 + off * kc_s1
    vc_tok = vc_ptr + blk * vc_s0 + off * vc_s1
    kv_heads = tl.arange(0, BLOCK_HK)
    kv_mask = (kv_heads < n_kv_heads)[:, None] & d_ok[None, :]
    kc_dst = kc_tok + kv_heads[:, None] * kc_s2 + d[None, :]
    vc_dst = vc_tok + kv_heads[:, None] * vc_s2 + d[None, :]
    # Broadcast the scalar test to a vector first (the interpreter rejects scalar & block).
    store_mask = kv_mask & ((kv_heads.to(tl.int64) * 0 + slot) >= 0)[:, None]
    kc_dtype = kc_ptr.dtype.element_ty

    if ROTATE:
        q_dtype = q_ptr.dtype.element_ty
        for h0 in range(0, n_q_heads, BLOCK_HQ):
            y1, y2, mask = _rotate_heads(q_ptr, tok * q_s0, q_s1, n_q_heads, cos, sin, half,
                                         BLOCK_HQ, BLOCK_HALF, h0, qn_ptr, eps, HEAD_NORM, q_dtype,
                                         EMULATE_RNE)
            dst = q_ptr + tok * q_s0 + (h0 + tl.arange(0, BLOCK_HQ))[:, None] * q_s1 + d[None, :]
            tl.store(dst, round_to(y1, q_dtype, EMULATE_RNE), mask=mask)
            tl.store(dst + half, round_to(y2, q_dtype, EMULATE_RNE), mask=mask)
        k_dtype = k_ptr.dtype.element_ty
        y1, y2, _ = _rotate_heads(k_ptr, tok * k_s0, k_s1, n_kv_heads, cos, sin, half,
                                  BLOCK_HK, BLOCK_HALF, 0, kn_ptr, eps, HEAD_NORM, k_dtype, EMULATE_RNE)
        # Round to k's dtype first (as the reference returns rotated k), then to the cache's.
        k1 = round_to(y1, k_dtype, EMULATE_RNE).to(tl.float32)
        k2 = round_to(y2, k_dtype, EMULATE_RNE).to(tl.float32)
        tl.store(kc_dst, round_to(k1, kc_dtype, EMULATE_RNE), mask=store_mask)
        tl.store(kc_dst + half, round_to(k2, kc_dtype, EMULATE_RNE), mask=store_mask)
    else:
        k_src = k_ptr + tok * k_s0 + kv_heads[:, None] * k_s1 + d[None, :]
        k1 = tl.load(k_src, mask=store_mask, other=0.0).to(tl.float32)
        k2 = tl.load(k_src + half, mask=store_mask, other=0.0).to(tl.float32)
        tl.store(kc_dst, round_to(k1, kc_dtype, EMULATE_RNE), mask=store_mask)
        tl.store(kc_dst + half, round_to(k2, kc_dtype, EMULATE_RNE), mask=store_mask)

    vc_dtype = vc_ptr.dtype.element_ty
    v_src = v_ptr + tok * v_s0 + kv_heads[:, None] * v_s1 + d[None, :]
    v1 = tl.load(v_src, mask=store_mask, other=0.0).to(tl.float32)
    v2 = tl.load(v_src + half, mask=store_mask, other=0.0).to(tl.float32)
    tl.store(vc_dst, round_to(v1, vc_dtype, EMULATE_RNE), mask=store_mask)
    tl.store(vc_dst + half, round_to(v2, vc_dtype, EMULATE_RNE), mask=store_mask)


def _check_heads(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.dim() != 3:
        raise ValueError(f"{name} must be [T, heads, D], got {tuple(t.shape)}")
    return t if t.stride(-1) == 1 else t.contiguous()


def _check_cache(k: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"caches must both be [num_blocks, block_size, Hk, D], got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("cache last dim must be contiguous")
    if tuple(k_cache.shape[2:]) != tuple(k.shape[1:]):
        raise ValueError(f"k heads/dim {tuple(k.shape[1:])} != cache {tuple(k_cache.shape[2:])}")
    if slot_mapping.shape != (k.shape[0],):
        raise ValueError(f"slot_mapping {tuple(slot_mapping.shape)} != [T={k.shape[0]}]")


def _launch(positions: torch.Tensor | None, q: torch.Tensor | None, k: torch.Tensor,
            v: torch.Tensor, cos_sin_cache: torch.Tensor | None, k_cache: torch.Tensor,
            v_cache: torch.Tensor, slot_mapping: torch.Tensor,
            head_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> None:
    t, hk, d = k.shape
    if d % 2:
        raise ValueError(f"head dim {d} is odd")
    rotate = q is not None
    hq = q.shape[1] if q is not None else 1
    qq = q if q is not None else k  # placeholders are never read when not rotating
    cs = cos_sin_cache if cos_sin_cache is not None else k
    pos = positions if positions is not None else slot_mapping
    half = d // 2
    block_half = triton.next_power_of_2(half)
    block_hk = triton.next_power_of_2(hk)
    # q heads in chunks of ~4K elements of tile per iteration (both halves: 2 * 2K).
    block_hq = max(1, min(triton.next_power_of_2(hq), 2048 // block_half))
    elems = (min(block_hq, triton.next_power_of_2(hq)) + 2 * block_hk) * block_half
    num_warps = min(triton.next_power_of_2(max(elems // 1024, 1)), 8)
    qn, kn, eps = head_norm if head_norm is not None else (k, k, 0.0)  # placeholders: unread
    pdl = pdl_mode(k.device)
    _rope_kv_kernel[(t,)](
        pos, qq, k, v, cs, k_cache, v_cache, slot_mapping, qn, kn, float(eps),
        hq, hk, half, k_cache.shape[1],
        qq.stride(0), qq.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cs.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        ROTATE=rotate, HEAD_NORM=head_norm is not None, BLOCK_HQ=block_hq, BLOCK_HK=block_hk, BLOCK_HALF=block_half,
        EMULATE_RNE=_INTERPRET, PDL=pdl, EARLY_INPUTS=EARLY_STEP_INPUTS, num_warps=num_warps,
        **pdl_launch_kwargs(pdl),
    )


def rope_and_write_kv(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    cos_sin_cache: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor, head_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> torch.Tensor:
    """Rotate q in place (returned) and store rotate(k), v at slot_mapping in the caches.

    positions: [T] int; q: [T, Hq, D]; k, v: [T, Hk, D]; cos_sin_cache: [max_pos, D] float32;
    caches: [num_blocks, block_size, Hk, D]; slot_mapping: [T] int (-1: do not store).
    head_norm = (q_weight [D], k_weight [D], eps): RMS-normalise every q and k head before
    rotating (Qwen3), as `rms_norm_ref` per head would, in the same pass.
    k and v themselves are not modified. If q's last dim is not contiguous, a rotated
    contiguous copy is returned instead of rotating in place.
    """
    q, k, v = _check_heads("q", q), _check_heads("k", k), _check_heads("v", v)
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree")
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != q.shape[2]:
        raise ValueError(f"cos_sin_cache {tuple(cos_sin_cache.shape)} must be [max_pos, D]")
    if positions.shape != (q.shape[0],):
        raise ValueError(f"positions {tuple(positions.shape)} != [T={q.shape[0]}]")
    _check_cache(k, k_cache, v_cache, slot_mapping)
    if head_norm is not None and (head_norm[0].shape != (q.shape[2],) or head_norm[1].shape != (q.shape[2],)):
        raise ValueError(f"head_norm weights {tuple(head_norm[0].shape)}, {tuple(head_norm[1].shape)} "
                         f"must be [D={q.shape[2]}]")
    if q.shape[0] == 0:
        return q
    if head_norm is not None:
        head_norm = (head_norm[0].contiguous(), head_norm[1].contiguous(), head_norm[2])
    _launch(positions, q, k, v, cos_sin_cache.contiguous(), k_cache, v_cache, slot_mapping, head_norm)
    return q


def write_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store k, v ([T, Hk, D], any row/head strides) at their slots; slot -1 is skipped."""
    k, v = _check_heads("k", k), _check_heads("v", v)
    if k.shape != v.shape:
        raise ValueError(f"k {tuple(k.shape)} != v {tuple(v.shape)}")
    _check_cache(k, k_cache, v_cache, slot_mapping)
    if k.shape[0] == 0:
        return
    _launch(None, None, k, v, None, k_cache, v_cache, slot_mapping)
