"""Skinny matmul: out[M, N] = prologue(x)[M, K] @ W[N, K]^T (+ bias) for M <= MAX_M rows.

Decode steps of small batches are GEMVs: every weight byte is read once and used M times,
so the step is bound by streaming W from HBM. cuBLAS picks tiles made for large M and
leaves SMs idle on the narrower projections (measured 1.5-1.8 TB/s of 4.15 on an H200 for
TinyLlama's qkv and o projections). Here a program owns BLOCK_N rows of W and the whole K
(no split-K, no second pass): the grid has N / BLOCK_N programs, each streaming
BLOCK_N x K contiguous weights with wide loads.

The same pass applies what precedes the projection in the decoder, so those ops cost no
launch and no extra activation round trip:

    PROLOGUE_NONE      x as is
    PROLOGUE_RMSNORM   x (+ residual): rmsnorm(x + residual) * norm_w (`rms_norm_ref`,
                       its roundings included); the programs of the first column block
                       also store x + residual, the new residual stream.
    PROLOGUE_RMSNORM_PRESUMMED
                       x is the residual stream and `sumsq` its rows' sums of squares
                       (`new_sumsq`), accumulated by the projection that produced x (the
                       residual epilogue below): rmsnorm(x) * norm_w with one load of
                       SUMSQ_SLOTS partial sums instead of a pass over x.

Each program recomputes the prologue for its rows of x (a few KiB, from L2). The RMSNorm
prologue reads x twice: once for the row's sum of squares, once in the main loop.

Sums of squares accumulate in float64, here and in `rmsnorm.py`: squares of 16-bit
values are exact there and a sum of a few thousand of them is exact or within 2^-40, so
its float32 rounding does not depend on the order of the terms (nor on the order in which
the epilogue's atomics land). The norm kernel, both prologues and the epilogue's sums
therefore give the same rstd, bit for bit.

And what follows the qkv projection (`RopeKVStore`, epilogue): the q and k rows are
rotated (`reference.rotary_ref`, neox halves) and the rotated k and the v rows stored
straight into the paged KV cache (`reference.write_kv_ref`), which saves the rotary
kernel's launch and its round trip. A rotation pairs output dim j of a head with dim
j + D/2, so in the q/k rows a program owns BLOCK_N/2 such pairs (rows j.. and j+D/2.. of
one head) instead of BLOCK_N consecutive rows; the output keeps its layout.

Or, after an o or down projection (`skinny_linear_residual`, epilogue): the residual
add, stream = round(round(out) + residual) as `rms_norm_ref` rounds it, stored instead of
the projection's output, and each program's float64 sum of the squares of its columns of
the stream, added atomically into one of SUMSQ_SLOTS slots of `sumsq[m]` (zeroed by the
caller, `new_sumsq`): the next norm then needs no kernel of its own and no pass over x
(PROLOGUE_RMSNORM_PRESUMMED in the next projection, where `presummed_prologue_pays`).
Measured dead ends (docs/kernels.md): per-program partials that every consumer program
summed (4-8 KiB from L2 after its PDL wait), all programs' atomics on one address
(serialised: +280 us per Llama-3-8B step), and 32 slots on separate lines (see SUMSQ_SLOTS).

Or, after a [gate | up] projection (`silu_mul=True`, epilogue): silu(gate) * up,
so the output is half as wide and the down projection reads finished activations (a
SiLU prologue in the down projection, where each program recomputed the SiLU of the whole
row, measured slower inside the step: docs/kernels.md). A program then owns
BLOCK_N/2 gate rows j.. and the matching up rows I + j.. and rounds as the separate ops
do: gate and up to the dtype first, then silu(gate) * up once (`silu_and_mul_ref`).

The first `_PRELOAD_TILES` weight tiles are loaded before the kernel waits for its input
(`await_producer`): under programmatic dependent launch they stream in while the kernel
before is still running (docs/kernels.md has the measurements).

Products and sums are float32, one rounding to the output dtype (bias added before it).
Two inner products: elementwise multiply-and-sum (any M, no tensor cores) and `tl.dot`
with M padded to 16 (USE_DOT); `pick_config` chooses from measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from titaninfer.kernels.rotary import rotate_pair
from titaninfer.kernels.triton_common import (
    DEFAULT_NUM_SMS,
    await_producer,
    pdl_launch_kwargs,
    pdl_mode,
    rms_rstd,
    round_to,
    stamp,
    sum_squares,
    trace_slot,
)
from titaninfer.kernels.triton_common import INTERPRET as _INTERPRET

MAX_M = 16  # rows this kernel serves; larger batches go to cuBLAS

PROLOGUE_NONE, PROLOGUE_RMSNORM, PROLOGUE_RMSNORM_PRESUMMED = 0, 2, 3
# The residual epilogue's atomics spread over SUMSQ_SLOTS addresses (program p adds into
# slot p % SUMSQ_SLOTS) so they do not queue on one, SUMSQ_STRIDE float64s apart: with 16
# each slot has its own 128-byte line (the entries between stay zero), and the next
# projection's programs load SUMSQ_SLOTS lines. Captured batch-1 step, H200, us:
# - a1ae91d, one call, slots x spacing 1 / 8x1 / 4x16 / 32x16: TinyLlama 794.9 / 787.7 /
#   786.2 / 803.7, Qwen3-0.6B 829.5 / 835.4 / 838.7 / 880.1, Llama-3-8B 4,146.6 / 3,867.8 /
#   3,864.6 / 3,864.5 (one address serialises Llama-3-8B's 1,024 programs; 32 lines cost
#   every consumer program 32 loads);
# - 4dd362f and 521e63d, two calls, two reps each, 8x1 / 8x16 / 4x16: TinyLlama 728.0,
#   727.5 / 730.6, 730.4 / 723.2, 722.5 and 729.7, 729.4 / - / 724.9, 724.6; Llama-3-8B
#   3,884 / 3,880 / 3,881 and 3,871.7 / - / 3,868.3. Hence 4x16. The gap before the
#   gate_up projection (2.05 us, kernel_trace.py) is the same in all three, so it is not
#   the atomics draining.
SUMSQ_SLOTS = 4
SUMSQ_STRIDE = 16


def sumsq_width() -> int:
    """float64s per row of a sums-of-squares accumulator (`new_sumsq`)."""
    return SUMSQ_SLOTS * SUMSQ_STRIDE


@dataclass(frozen=True)
class SkinnyConfig:
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    use_dot: bool = False
    loop_tiles: int = 1  # weight tiles in flight per iteration of the main loop (1 or 2)
    # M > 1 without dots: one [BM, BLOCK_N, BLOCK_K] product accumulator reduced once at the
    # end (the weight tile loaded in its layout), not a [BM, BLOCK_N] sum per tile.
    acc3: bool = False


@dataclass(frozen=True)
class RopeKVStore:
    """Rotary + paged KV store fused after a qkv projection whose output is [q | k | v]
    (q_size, kv_size and kv_size columns; heads of D = k_cache.shape[-1] dims).

    positions, slot_mapping: [M] ints (slot -1: not stored); cos_sin_cache: [max_pos, D]
    float32 = [cos | sin]; caches: [num_blocks, block_size, Hk, D]. The projection's
    output then holds rotated q and k (and v); rotated k and v are also in the cache.
    positions, slot_mapping and the table are read before the PDL wait: no kernel of the
    step may write them (the runner copies them in before the step's first kernel)."""

    positions: torch.Tensor
    cos_sin_cache: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor
    q_size: int
    kv_size: int


@triton.jit
def _silu_mul(gate, up):
    """silu(gate) * up in float32 (the epilogue's; `silu_and_mul_ref` rounds alike)."""
    return gate / (1.0 + tl.exp(-gate)) * up


@triton.jit
def _load_x(x_ptr, ms, m_ok, k0, K, x_stride, BLOCK_K: tl.constexpr):
    """[BM, BLOCK_K] float32 tile of x at k0 as stored (zeros past K)."""
    ks = k0 + tl.arange(0, BLOCK_K)
    mask = m_ok[:, None] & (ks < K)[None, :]
    return tl.load(x_ptr + ms[:, None] * x_stride + ks[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _norm_weight_tile(nw_ptr, k0, K, PROLOGUE: tl.constexpr, BLOCK_K: tl.constexpr):
    """The norm weight at k0 (a constant: may load before the PDL wait); zeros without a norm."""
    ks = k0 + tl.arange(0, BLOCK_K)
    if PROLOGUE >= 2:
        return tl.load(nw_ptr + ks, mask=ks < K, other=0.0).to(tl.float32)
    return tl.zeros([BLOCK_K], tl.float32)


@triton.jit
def _apply_prologue(x, nw, res_ptr, new_res_ptr, ms, m_ok, k0, K, rstd, store_res_rows,
                    dtype: tl.constexpr, PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr,
                    BLOCK_K: tl.constexpr, EMULATE_RNE: tl.constexpr):
    """prologue(x) for a raw x tile at k0 and its norm weight tile nw: float32 values,
    each exactly representable in dtype."""
    if PROLOGUE >= 2:  # RMSNORM or RMSNORM_PRESUMMED (no residual to add: HAS_RES is False)
        if HAS_RES:
            ks = k0 + tl.arange(0, BLOCK_K)
            mask = m_ok[:, None] & (ks < K)[None, :]
            r = tl.load(res_ptr + ms[:, None] * K + ks[None, :], mask=mask, other=0.0).to(tl.float32)
            s = round_to(x + r, dtype, EMULATE_RNE)
            tl.store(new_res_ptr + ms[:, None] * K + ks[None, :], s, mask=mask & (ms < store_res_rows)[:, None])
            x = s.to(tl.float32)
        normed = round_to(x * rstd[:, None], dtype, EMULATE_RNE).to(tl.float32)
        x = round_to(normed * nw[None, :], dtype, EMULATE_RNE).to(tl.float32)
    return x


@triton.jit
def _accumulate(acc, w, x, USE_DOT: tl.constexpr, BM: tl.constexpr, EMULATE_RNE: tl.constexpr,
                ACC3: tl.constexpr = False):
    """acc += x @ w^T for one K tile (acc is [BLOCK_N, BLOCK_K] partial products when BM == 1
    without dots, [BM, BLOCK_N, BLOCK_K] under ACC3: one reduction at the end instead of one
    per tile)."""
    if USE_DOT:
        if EMULATE_RNE:  # the interpreter's bf16 dot is wrong: values are exact in fp32
            acc += tl.dot(x, tl.trans(w.to(tl.float32)))
        else:
            acc += tl.dot(x.to(w.dtype), tl.trans(w))
    elif BM == 1:
        acc += w.to(tl.float32) * x
    elif ACC3:  # w: [1, BLOCK_N, BLOCK_K], loaded so (its layout is the accumulator's)
        acc += x[:, None, :] * w.to(tl.float32)
    else:
        acc += tl.sum(x[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
    return acc


@triton.jit
def _weight_tile(w_rows, n_ok, k0, K, BLOCK_K: tl.constexpr, ACC3: tl.constexpr = False):
    """W[rows, k0:k0 + BLOCK_K] (zeros past K); [1, BLOCK_N, BLOCK_K] under ACC3."""
    ks = k0 + tl.arange(0, BLOCK_K)
    if ACC3:
        w = tl.load(w_rows[None, :, :] + ks[None, None, :], mask=n_ok[None, :, None] & (ks < K)[None, None, :],
                    other=0.0)
    else:
        w = tl.load(w_rows + ks[None, :], mask=n_ok[:, None] & (ks < K)[None, :], other=0.0)
    return w


@triton.jit
def _tile_step(acc, w, x, nw, k0, res_ptr, new_res_ptr, ms, m_ok, K, rstd, store_res_rows,
               dtype: tl.constexpr, PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr, USE_DOT: tl.constexpr,
               BM: tl.constexpr, BLOCK_K: tl.constexpr, EMULATE_RNE: tl.constexpr, ACC3: tl.constexpr = False):
    """acc += prologue(x) @ w^T for the weight tile w, raw x tile x and norm weight nw at k0."""
    x = _apply_prologue(x, nw, res_ptr, new_res_ptr, ms, m_ok, k0, K, rstd, store_res_rows,
                        dtype, PROLOGUE, HAS_RES, BLOCK_K, EMULATE_RNE)
    return _accumulate(acc, w, x, USE_DOT, BM, EMULATE_RNE, ACC3)


@triton.jit
def _output_rows(pid, lanes, n_rotated, gate_size, BLOCK_N: tl.constexpr, ROPE: tl.constexpr,
                 HEAD_DIM: tl.constexpr, SILU_MUL: tl.constexpr):
    """Rows of W (= output columns) of program pid: BLOCK_N consecutive ones, except the
    first n_rotated (q and k) under ROPE: BLOCK_N/2 rotation pairs, lanes l and l + BLOCK_N/2
    on dims j and j + D/2 of one head (BLOCK_N divides D, so a program stays in one head);
    and under SILU_MUL: gate rows j.. on lanes l < BLOCK_N/2, up rows gate_size + j.. on
    lanes l + BLOCK_N/2."""
    plain = pid.to(tl.int64) * BLOCK_N + lanes
    if SILU_MUL:
        HALF: tl.constexpr = BLOCK_N // 2
        return pid.to(tl.int64) * HALF + lanes % HALF + (lanes // HALF) * gate_size
    if ROPE:
        HALF_N: tl.constexpr = BLOCK_N // 2
        HALF_D: tl.constexpr = HEAD_DIM // 2
        pair = pid.to(tl.int64) * HALF_N + lanes % HALF_N
        paired = (pair // HALF_D) * HEAD_DIM + (lanes // HALF_N) * HALF_D + pair % HALF_D
        return tl.where(plain < n_rotated, paired, plain)
    return plain


@triton.jit
def _rope_operands(rows, ms, m_ok, pos_ptr, cs_ptr, cs_s0, slot_ptr, BM: tl.constexpr, BLOCK_N: tl.constexpr,
                   ROPE: tl.constexpr, HEAD_DIM: tl.constexpr):
    """(cos, sin) [BM, BLOCK_N] of each row's position and rotation dim, and the rows' KV
    slots [BM]. Step inputs no kernel writes, so they load before the wait (their latency
    hides behind the weight stream instead of adding to the epilogue's)."""
    if ROPE:
        HALF_D: tl.constexpr = HEAD_DIM // 2
        pos = tl.load(pos_ptr + ms, mask=m_ok, other=0).to(tl.int64)
        cs = cs_ptr + pos[:, None] * cs_s0 + (rows % HALF_D)[None, :]
        cos = tl.load(cs, mask=m_ok[:, None], other=0.0)
        sin = tl.load(cs + HALF_D, mask=m_ok[:, None], other=0.0)
        slot = tl.load(slot_ptr + ms, mask=m_ok, other=-1).to(tl.int64)
        return cos, sin, slot
    return tl.zeros([BM, BLOCK_N], tl.float32), tl.zeros([BM, BLOCK_N], tl.float32), tl.zeros([BM], tl.int64)


@triton.jit
def _partner_lanes(y, lanes, BLOCK_N: tl.constexpr):
    """y [BM, BLOCK_N] -> each lane's partner's value (lane l +/- BLOCK_N/2), picked by a
    [BLOCK_N, BLOCK_N] selection: exact (a sum of one value and zeros) and tiny."""
    partner = (lanes + BLOCK_N // 2) % BLOCK_N
    pick = lanes[None, :] == partner[:, None]
    return tl.sum(tl.where(pick[None, :, :], y[:, None, :], 0.0), axis=2)


@triton.jit
def _rope_kv_epilogue(
    y, rows, lanes, m_ok, n_ok, q_size, kv_size, cos, sin, slot,
    kc_ptr, vc_ptr, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2, kv_block,
    dtype: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, EMULATE_RNE: tl.constexpr,
):
    """y: [BM, BLOCK_N] projection outputs (float32, representable in dtype) on `rows`.
    Rotates the q/k rows (rounded once, as `rotary_ref`), stores k and v rows at their
    slots in the caches and returns the values for the output."""
    HALF_D: tl.constexpr = HEAD_DIM // 2
    y_partner = _partner_lanes(y, lanes, BLOCK_N)
    upper = ((rows % HEAD_DIM) >= HALF_D)[None, :]
    rot = rotate_pair(y, tl.where(upper, -y_partner, y_partner), cos, sin)  # as the rotary kernel rounds
    y = tl.where((rows < q_size + kv_size)[None, :], round_to(rot, dtype, EMULATE_RNE).to(tl.float32), y)

    blk = tl.where(slot >= 0, slot, 0) // kv_block
    off = tl.where(slot >= 0, slot, 0) % kv_block
    kv_row = rows - q_size  # k rows: [0, kv_size), v rows: [kv_size, 2 * kv_size)
    is_v = kv_row >= kv_size
    head_row = tl.where(is_v, kv_row - kv_size, kv_row)
    head = head_row // HEAD_DIM
    dim = head_row % HEAD_DIM
    ok = m_ok[:, None] & (slot >= 0)[:, None] & (n_ok & (kv_row >= 0))[None, :]
    k_dst = kc_ptr + blk[:, None] * kc_s0 + off[:, None] * kc_s1 + (head * kc_s2 + dim)[None, :]
    v_dst = vc_ptr + blk[:, None] * vc_s0 + off[:, None] * vc_s1 + (head * vc_s2 + dim)[None, :]
    tl.store(k_dst, round_to(y, kc_ptr.dtype.element_ty, EMULATE_RNE), mask=ok & ~is_v[None, :])
    tl.store(v_dst, round_to(y, vc_ptr.dtype.element_ty, EMULATE_RNE), mask=ok & is_v[None, :])
    return y


# M changes with the batch: not specialised on, so one variant per (shape, BM bucket).
@triton.jit(do_not_specialize=["M"])
def _skinny_gemm_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, res_ptr, nw_ptr, new_res_ptr,
    M, N, K, x_stride, eps,
    pos_ptr, cs_ptr, cs_s0, slot_ptr, kc_ptr, vc_ptr, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2, kv_block,
    q_size, kv_size, gate_size,
    sq_in_ptr, add_ptr, sq_out_ptr, trace_ptr,
    BM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr, EMULATE_RNE: tl.constexpr, PDL: tl.constexpr, PRELOAD: tl.constexpr,
    ROPE: tl.constexpr, HEAD_DIM: tl.constexpr, SILU_MUL: tl.constexpr,
    ADD_RESIDUAL: tl.constexpr, SLOTS: tl.constexpr, SLOT_STRIDE: tl.constexpr, LOOP_TILES: tl.constexpr,
    TRACE: tl.constexpr = False, ACC3: tl.constexpr = False,
):
    tl.static_assert(PRELOAD == 1 or PRELOAD == 2, "PRELOAD: 1 or 2 weight tiles before the wait")
    tl.static_assert(LOOP_TILES == 1 or LOOP_TILES == 2, "LOOP_TILES: 1 or 2 weight tiles per iteration")
    tl.static_assert(not ACC3 or (BM > 1 and not USE_DOT), "ACC3: the elementwise form of M > 1 rows")
    pid = tl.program_id(0)
    stamp(trace_ptr, pid, 0, pid, 3, TRACE)  # stamps: start, after the wait, end
    lanes = tl.arange(0, BLOCK_N)
    rows = _output_rows(pid, lanes, q_size + kv_size, gate_size, BLOCK_N, ROPE, HEAD_DIM, SILU_MUL)  # rows of W
    if SILU_MUL:  # lane l's gate/up pair: pid * BLOCK_N/2 + l % (BLOCK_N/2), real below gate_size
        n_ok = (pid.to(tl.int64) * (BLOCK_N // 2) + lanes % (BLOCK_N // 2)) < gate_size
    else:
        n_ok = rows < N
    ms = tl.arange(0, BM)
    m_ok = ms < M
    dtype = x_ptr.dtype.element_ty  # every rounding is to x's dtype (out may be float32: logits)
    store_res_rows = tl.where(pid == 0, M, 0)  # only the first program stores x + residual

    # No kernel writes the weights, so the first PRELOAD tiles stream in before the wait:
    # under PDL while the previous kernel (attention, a norm, the previous GEMV) still runs.
    # Tiles past K are fully masked: no memory traffic, they add zeros.
    w_rows = w_ptr + rows[:, None] * K  # [BLOCK_N, 1]
    cos, sin, slot = _rope_operands(rows, ms, m_ok, pos_ptr, cs_ptr, cs_s0, slot_ptr, BM, BLOCK_N, ROPE, HEAD_DIM)
    w0 = _weight_tile(w_rows, n_ok, 0, K, BLOCK_K, ACC3)
    nw0 = _norm_weight_tile(nw_ptr, 0, K, PROLOGUE, BLOCK_K)
    if PRELOAD >= 2:
        w1 = _weight_tile(w_rows, n_ok, BLOCK_K, K, BLOCK_K, ACC3)
        nw1 = _norm_weight_tile(nw_ptr, BLOCK_K, K, PROLOGUE, BLOCK_K)
    await_producer(PDL)
    stamp(trace_ptr, pid, 1, pid, 3, TRACE)
    # Everything this program needs from the kernel before is requested at once, so the
    # wait is followed by one L2 round trip, not one per dependent load: x's tiles for the
    # preloaded weights, the stream to add, the sums of squares.
    x0 = _load_x(x_ptr, ms, m_ok, 0, K, x_stride, BLOCK_K)
    if PRELOAD >= 2:
        x1 = _load_x(x_ptr, ms, m_ok, BLOCK_K, K, x_stride, BLOCK_K)
    if ADD_RESIDUAL:  # the stream's rows of this program, loaded now so the loop hides the latency
        add_offs = ms[:, None] * N + rows[None, :]
        add_mask = m_ok[:, None] & n_ok[None, :]
        stream_in = tl.load(add_ptr + add_offs, mask=add_mask, other=0.0).to(tl.float32)

    rstd = tl.zeros([BM], dtype=tl.float32)
    if PROLOGUE == 3:  # the producer's sums of squares: one load, no pass over x
        sq = tl.load(sq_in_ptr + ms[:, None] * (SLOTS * SLOT_STRIDE) + tl.arange(0, SLOTS)[None, :] * SLOT_STRIDE,
                     mask=m_ok[:, None], other=0.0)
        rstd = rms_rstd(tl.sum(sq, axis=1), K, eps)
    if PROLOGUE == 2:  # first pass: each row's sum of squares (x + residual rounded first)
        sq = tl.zeros([BM], dtype=tl.float64)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            mask = m_ok[:, None] & (kk < K)[None, :]
            xs = tl.load(x_ptr + ms[:, None] * x_stride + kk[None, :], mask=mask, other=0.0).to(tl.float32)
            if HAS_RES:
                r = tl.load(res_ptr + ms[:, None] * K + kk[None, :], mask=mask, other=0.0).to(tl.float32)
                xs = round_to(xs + r, dtype, EMULATE_RNE).to(tl.float32)
            sq += sum_squares(xs)
        rstd = rms_rstd(sq, K, eps)

    if not USE_DOT and BM == 1:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    elif ACC3:
        acc = tl.zeros([BM, BLOCK_N, BLOCK_K], dtype=tl.float32)
    else:
        acc = tl.zeros([BM, BLOCK_N], dtype=tl.float32)
    acc = _tile_step(acc, w0, x0, nw0, 0, res_ptr, new_res_ptr, ms, m_ok, K, rstd, store_res_rows,
                     dtype, PROLOGUE, HAS_RES, USE_DOT, BM, BLOCK_K, EMULATE_RNE, ACC3)
    if PRELOAD >= 2:
        acc = _tile_step(acc, w1, x1, nw1, BLOCK_K, res_ptr, new_res_ptr, ms, m_ok, K, rstd, store_res_rows,
                         dtype, PROLOGUE, HAS_RES, USE_DOT, BM, BLOCK_K, EMULATE_RNE, ACC3)
    # The rest of K, LOOP_TILES weight tiles in flight per iteration (tiles past K: masked).
    for k0 in range(PRELOAD * BLOCK_K, K, LOOP_TILES * BLOCK_K):
        wa = _weight_tile(w_rows, n_ok, k0, K, BLOCK_K, ACC3)
        if LOOP_TILES >= 2:
            wb = _weight_tile(w_rows, n_ok, k0 + BLOCK_K, K, BLOCK_K, ACC3)
        xa = _load_x(x_ptr, ms, m_ok, k0, K, x_stride, BLOCK_K)
        nwa = _norm_weight_tile(nw_ptr, k0, K, PROLOGUE, BLOCK_K)
        acc = _tile_step(acc, wa, xa, nwa, k0, res_ptr, new_res_ptr, ms, m_ok, K, rstd, store_res_rows,
                         dtype, PROLOGUE, HAS_RES, USE_DOT, BM, BLOCK_K, EMULATE_RNE, ACC3)
        if LOOP_TILES >= 2:
            xb = _load_x(x_ptr, ms, m_ok, k0 + BLOCK_K, K, x_stride, BLOCK_K)
            nwb = _norm_weight_tile(nw_ptr, k0 + BLOCK_K, K, PROLOGUE, BLOCK_K)
            acc = _tile_step(acc, wb, xb, nwb, k0 + BLOCK_K, res_ptr, new_res_ptr, ms, m_ok, K, rstd,
                             store_res_rows, dtype, PROLOGUE, HAS_RES, USE_DOT, BM, BLOCK_K, EMULATE_RNE, ACC3)
    if not USE_DOT and BM == 1:
        acc = tl.sum(acc, axis=1)[None, :]
    elif ACC3:
        acc = tl.sum(acc, axis=2)
    if HAS_BIAS:
        acc += tl.load(b_ptr + rows, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if ROPE:
        # The projection's output rounds first, as unfused (then the rotation rounds again).
        acc = _rope_kv_epilogue(round_to(acc, dtype, EMULATE_RNE).to(tl.float32), rows, lanes, m_ok, n_ok,
                                q_size, kv_size, cos, sin, slot, kc_ptr, vc_ptr,
                                kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2, kv_block,
                                dtype, BLOCK_N, HEAD_DIM, EMULATE_RNE)
    if ADD_RESIDUAL:
        # The projection's output rounds as if stored, then the add rounds (rms_norm_ref's
        # order); this program's part of each row's sum of squares, in float64 (its result
        # is not used, so the atomic does not hold the program).
        stream = round_to(round_to(acc, dtype, EMULATE_RNE).to(tl.float32) + stream_in, dtype, EMULATE_RNE)
        tl.atomic_add(sq_out_ptr + ms * (SLOTS * SLOT_STRIDE) + (pid % SLOTS) * SLOT_STRIDE,
                      sum_squares(stream.to(tl.float32)), mask=m_ok,
                      sem="relaxed")
        acc = stream.to(tl.float32)  # masked columns: 0 + 0, not stored
    if SILU_MUL:
        # gate and up round as the projection's output would, then silu(gate) * up once.
        y = round_to(acc, dtype, EMULATE_RNE).to(tl.float32)
        act = _silu_mul(y, _partner_lanes(y, lanes, BLOCK_N))
        gate_lane = lanes < BLOCK_N // 2
        tl.store(out_ptr + ms[:, None] * gate_size + rows[None, :], round_to(act, dtype, EMULATE_RNE),
                 mask=m_ok[:, None] & (n_ok & gate_lane)[None, :])
    else:
        out_offs = ms[:, None] * N + rows[None, :]
        tl.store(out_ptr + out_offs, round_to(acc, dtype, EMULATE_RNE), mask=m_ok[:, None] & n_ok[None, :])
    if TRACE:
        stamp(trace_ptr, pid, 2, tl.sum(tl.sum(acc, 1), 0).to(tl.int32, bitcast=True), 3, TRACE)


def m_bucket(m: int) -> int:
    """Rows the kernel is compiled for: the next power of two (one variant per bucket)."""
    return 1 if m <= 1 else triton.next_power_of_2(m)


# Weight tiles a program loads before waiting for its input (1 or 2): with PDL mode 2 the
# GEMV after a chain of short kernels (rope, attention, a norm) is resident early, and two
# tiles use more of that time (see triton_common.PDL_MODE; 3 and 4 measured slower).
_PRELOAD_TILES = 2
# Two weight tiles per loop iteration for grids of at most this many programs per SM (all
# resident at once). Besides keeping two tiles in flight in the loop, that raises the
# kernel's registers (64 -> 71-92 by epilogue) so that at most 5-7 of its programs fit on
# an SM instead of 8, which spreads a small grid over more SMs; the code around the PDL wait
# is the same instruction for instruction (SASS compared). Captured batch-1 step, H200, us,
# two reps each (graph_replay_time.py):
#   b064538, two tiles on every projection: TinyLlama 760.9 / 760.6 -> 737.6 / 738.1;
#   Llama-3-8B (1,024-7,168 programs per projection) 3,879 / 3,880 -> 4,175 / 4,175.
#   3a4aadc, TinyLlama, from two tiles on its down projection only (512 programs, the one
#   whose loop is not empty; 743.3 us): + qkv and o (640 / 512 programs, empty loop) 726.9 /
#   726.4; + gate_up (2,816) 740.8 / 740.3; + LM head (8,000) 742.8 / 742.5; all 730.4 / 729.4.
# So: grids up to 5 programs per SM, loop or not. Since then (0a41fb5-662f1c9, one call,
# two reps), TinyLlama's qkv (640 programs, 4.85 per SM) back at one tile: 719.5 / 719.3
# against 724.3 / 725.8, and 719.7 against 724.8 / 725.0 in another call (b7145a1), where
# limit 3 (its o and down projections, 512 programs, at one tile too) took 743.3 / 742.4.
# Hence 4. 0: never.
_LOOP2_MAX_PROGRAMS_PER_SM = 4
_MIN_PROGRAMS_PER_SM = 2  # M = 1: 4-row programs only where there are this many per SM


# M = 2 (bucket 2) on the 3-D accumulator form (SkinnyConfig.acc3), with M = 1's tiles at
# 4 rows per program. Kernels alone (skinny_sweep.py --acc3, H200, us; Qwen3-0.6B qkv / o /
# gate_up / down, Llama-3-8B gate_up): M = 2 4.6 / 2.2 / 6.6 / 3.1 / 62.7 against cuBLAS
# 5.0 / 8.1 / 6.5 / 6.8 / 58.1 and the per-tile sum 6.0 / 4.4 / 8.8 / 8.2 / 80.8. The
# captured batch-2 step (graph_replay_time.py): Qwen3-0.6B 897.8 us against 1,420.4 on
# cuBLAS, Llama-3-8B 4,283.8 against 4,484.2. At M = 4 (best tiles 5.6 / 2.9 / 7.8 / 3.8 /
# 84.4 against cuBLAS 5.4 / 8.4 / 6.2 / 7.1 / 61.9) and M = 8 (its [8, BLOCK_N, BLOCK_K]
# products need too many registers: 2-5x cuBLAS) those batches stay on cuBLAS. False: the
# per-tile sum at M = 2 (A/B).
_ACC3_AT_TWO_ROWS = True


def pick_config(m: int, n: int, k: int, num_sms: int = DEFAULT_NUM_SMS) -> SkinnyConfig:
    """Tile choice for [m, k] x [n, k]^T, from `benchmarks/skinny_sweep.py` on an H200.

    M = 1: 4 rows of W x 1024 columns per iteration (8 KiB per program in flight, thousands
    of programs), no software pipelining: the best or within a few % of it on the TinyLlama,
    Llama-3-8B and Qwen3-0.6B projections; two tiles per loop iteration where the grid is
    one wave (`_LOOP2_MAX_PROGRAMS_PER_SM`). M = 2: those tiles at 4 rows with the 3-D
    accumulator (`_ACC3_AT_TWO_ROWS`). M >= 3: only the tl.dot form came near cuBLAS (it did
    not beat it), so the engine sends those batches to cuBLAS; these are fallbacks."""
    bm = m_bucket(m)
    block_k = min(1024, max(64, triton.next_power_of_2(k)))
    if bm <= 2:
        # M = 1, narrow outputs (N < 1056): 2 rows per program, to keep >= 2 programs per SM
        # (M = 2 was measured at 4 rows on every shape).
        narrow = bm == 1 and triton.cdiv(n, 4) < _MIN_PROGRAMS_PER_SM * num_sms
        block_n = 2 if narrow else 4
        one_wave = triton.cdiv(n, block_n) <= _LOOP2_MAX_PROGRAMS_PER_SM * num_sms
        return SkinnyConfig(block_n=block_n, block_k=block_k, num_warps=4, num_stages=1,
                            loop_tiles=2 if one_wave else 1, acc3=bm == 2 and _ACC3_AT_TWO_ROWS)
    return SkinnyConfig(block_n=32, block_k=min(block_k, 128), num_warps=4, num_stages=3, use_dot=True)


# Program-count x K above which the RMSNorm prologue costs more than a separate norm launch:
# each program re-reads x (and the residual) twice from L2 for its sum of squares, after
# the PDL wait, so that work sits on the step's critical path. Kernels alone (graph replay
# of one kernel, benchmarks/skinny_sweep.py, H200, M = 1), fused vs norm kernel + GEMV:
# 640 x 2048 (TinyLlama qkv) 5.9 vs 7.6 us, 1024 x 1024 (Qwen3 qkv) 5.5 vs 7.1 us, fused
# wins; 2816 x 2048 (TinyLlama gate_up) 17.4 vs 16.5 and 1536 x 4096 (Llama-3-8B qkv) 20.0
# vs 18.1 us, it loses. But what counts is the whole captured step under PDL
# (graph_replay_time.py, one call, us per step at limits 2M / 1M / 0): TinyLlama
# 820.6 / 785.5 / 785.1 (its qkv fused loses 35 us there), Qwen3-0.6B 884.0 / 882.3 / 890.7.
# At 1M only Qwen3's qkv (1024 x 1024) keeps the prologue.
_NORM_PROLOGUE_MAX_WORK = 1 << 20


def _prologue_work(m: int, n: int, k: int) -> int:
    """Elements of x a norm prologue normalises in all: each program does the whole row."""
    return triton.cdiv(n, pick_config(m, n, k).block_n) * k


def rmsnorm_prologue_pays(m: int, n: int, k: int) -> bool:
    """Whether to fuse RMSNorm into the [n, k] projection (else: norm kernel, then GEMV)."""
    return _prologue_work(m, n, k) <= _NORM_PROLOGUE_MAX_WORK


# The same limit for the presummed prologue, which skips the pass for the sum of squares but
# still normalises the whole row in every program (programs x K elements, after the wait).
# Since b064538 a program requests x and the sums together right after the wait and has its
# norm weight tiles before it. Captured batch-1 step, H200, us, one call, two reps, the
# prologue on every projection whose stream is summed vs up to 2M: TinyLlama (its gate_up,
# 5.8M, gains it) 760.9 / 760.6 -> 752.9 / 752.5; Llama-3-8B (its qkv 6.3M and gate_up 29M)
# 3,879 / 3,880 -> 3,901 / 3,902. Hence 6M; Qwen3-0.6B's projections are all below 2M.
_PRESUMMED_PROLOGUE_MAX_WORK = 6_000_000


def presummed_prologue_pays(m: int, n: int, k: int) -> bool:
    """Whether a projection whose input stream brings its sums of squares normalises in its
    prologue (else: the norm kernel first)."""
    return _prologue_work(m, n, k) <= _PRESUMMED_PROLOGUE_MAX_WORK


def _check(x: torch.Tensor, weight: torch.Tensor, k: int) -> None:
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"skinny_gemm: x {tuple(x.shape)} and weight {tuple(weight.shape)} must be 2-D")
    if x.shape[0] > MAX_M:
        raise ValueError(f"skinny_gemm: {x.shape[0]} rows > MAX_M={MAX_M}; use a GEMM")
    if weight.shape[1] != k:
        raise ValueError(f"skinny_gemm: weight {tuple(weight.shape)} does not take {k} inputs")
    if x.dtype not in (torch.float16, torch.bfloat16) or weight.dtype != x.dtype:
        raise TypeError(f"skinny_gemm: needs fp16/bf16 x and weight of one dtype, got {x.dtype}/{weight.dtype}")
    if x.stride(-1) != 1 or not weight.is_contiguous():
        raise ValueError("skinny_gemm: x needs a contiguous last dim and weight must be contiguous")


def rope_epilogue_fits(m: int, n: int, k: int, head_dim: int, config: SkinnyConfig | None = None) -> bool:
    """Whether a RopeKVStore epilogue can run with this projection's tiles: a program's
    rotation pairs must stay in one head (BLOCK_N even and dividing D)."""
    block_n = (config or pick_config(m, n, k)).block_n
    return block_n % 2 == 0 and head_dim % block_n == 0


def _check_rope(rope: RopeKVStore, m: int, n: int) -> int:
    """Validate the epilogue's inputs against an [m, n] qkv output; returns the head dim."""
    d = rope.k_cache.shape[-1]
    if rope.k_cache.dim() != 4 or rope.v_cache.shape != rope.k_cache.shape:
        raise ValueError(f"rope epilogue: caches {tuple(rope.k_cache.shape)}, {tuple(rope.v_cache.shape)} "
                         "must both be [num_blocks, block_size, Hk, D]")
    if rope.k_cache.stride(-1) != 1 or rope.v_cache.stride(-1) != 1:
        raise ValueError("rope epilogue: cache last dim must be contiguous")
    if n != rope.q_size + 2 * rope.kv_size or rope.q_size % d or rope.kv_size != rope.k_cache.shape[2] * d:
        raise ValueError(f"rope epilogue: {n} outputs are not q {rope.q_size} + 2 x kv {rope.kv_size} "
                         f"in heads of {d} matching the cache's {rope.k_cache.shape[2]} KV heads")
    if rope.positions.shape != (m,) or rope.slot_mapping.shape != (m,):
        raise ValueError(f"rope epilogue: positions {tuple(rope.positions.shape)} and slot_mapping "
                         f"{tuple(rope.slot_mapping.shape)} must be [{m}]")
    cs = rope.cos_sin_cache
    if cs.dim() != 2 or cs.shape[1] != d or cs.dtype != torch.float32 or cs.stride(1) != 1:
        raise ValueError(f"rope epilogue: cos_sin_cache {tuple(cs.shape)} {cs.dtype} must be float32 [max_pos, {d}]")
    return d


def new_sumsq(m: int, device: torch.device | str, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Zeroed accumulators of the residual epilogue for m rows ([*batch, m, slots])."""
    return torch.zeros((*batch, m, sumsq_width()), dtype=torch.float64, device=device)


def sumsq_total(sumsq: torch.Tensor) -> torch.Tensor:
    """[..., m] sums of squares held by `new_sumsq` accumulators."""
    return sumsq.sum(-1)


def _check_sumsq(sumsq: torch.Tensor, m: int) -> None:
    if sumsq.shape != (m, sumsq_width()) or sumsq.dtype != torch.float64 or not sumsq.is_contiguous():
        raise ValueError(f"sumsq {tuple(sumsq.shape)} {sumsq.dtype} must be a contiguous float64 "
                         f"[{m}, {sumsq_width()}] (new_sumsq)")


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: int, prologue: int,
            residual: torch.Tensor | None = None, norm_weight: torch.Tensor | None = None,
            eps: float = 0.0, config: SkinnyConfig | None = None,
            rope: RopeKVStore | None = None, silu_mul: bool = False,
            sumsq: torch.Tensor | None = None, add_residual: torch.Tensor | None = None,
            sumsq_out: torch.Tensor | None = None,
            out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out, x + residual of the norm prologue or None). sumsq: the presummed prologue's
    input; add_residual with sumsq_out: the residual epilogue's; out_dtype float32: the
    output rounded to x's dtype, stored as float32 (no epilogue)."""
    _check(x, weight, k)
    m, n = x.shape[0], weight.shape[0]
    head_dim = _check_rope(rope, m, n) if rope is not None else 2
    if sum((rope is not None, silu_mul, add_residual is not None)) > 1:
        raise ValueError("one epilogue at a time: rope (qkv), SiLU-and-mul (gate_up) or the residual add")
    if sumsq is not None:
        _check_sumsq(sumsq, m)
    if (add_residual is None) != (sumsq_out is None):
        raise ValueError("residual epilogue: needs both the residual and sumsq_out")
    if sumsq_out is not None:
        _check_sumsq(sumsq_out, m)
    if add_residual is not None and (add_residual.shape != (m, n) or add_residual.dtype != x.dtype
                                     or not add_residual.is_contiguous()):
        raise ValueError(f"residual epilogue: residual {tuple(add_residual.shape)} {add_residual.dtype} "
                         f"must be a contiguous {x.dtype} [{m}, {n}]")
    if out_dtype not in (None, x.dtype, torch.float32):
        raise ValueError(f"skinny GEMV: out_dtype {out_dtype} must be x's dtype or float32")
    if out_dtype == torch.float32 and (rope is not None or silu_mul or add_residual is not None):
        raise ValueError("skinny GEMV: a float32 output takes no epilogue")
    out = torch.empty((m, n // 2 if silu_mul else n), dtype=out_dtype or x.dtype, device=x.device)
    new_res = torch.empty((m, k), dtype=x.dtype, device=x.device) if residual is not None else None
    cfg = config or pick_config(m, n, k)
    if m == 0:
        return out, new_res
    if rope is not None and not rope_epilogue_fits(m, n, k, head_dim, cfg):
        raise ValueError(f"rope epilogue: BLOCK_N={cfg.block_n} must be even and divide head dim {head_dim}")
    if silu_mul and (cfg.block_n % 2 or n % 2):
        raise ValueError(f"SiLU epilogue: BLOCK_N={cfg.block_n} and N={n} must be even")
    bm = max(16, m_bucket(m)) if cfg.use_dot else m_bucket(m)
    grid = (triton.cdiv(n // 2, cfg.block_n // 2),) if silu_mul else (triton.cdiv(n, cfg.block_n),)
    pdl = pdl_mode(x.device)
    trace, traced = trace_slot("gemv", grid[0], 3, x)
    if rope is not None:
        kc, vc = rope.k_cache, rope.v_cache
        rope_args = (rope.positions, rope.cos_sin_cache, rope.cos_sin_cache.stride(0), rope.slot_mapping, kc, vc,
                     kc.stride(0), kc.stride(1), kc.stride(2), vc.stride(0), vc.stride(1), vc.stride(2),
                     kc.shape[1], rope.q_size, rope.kv_size)
    else:  # placeholders, never read
        rope_args = (x, x, 0, x, x, x, 0, 0, 0, 0, 0, 0, 1, 0, 0)
    _skinny_gemm_kernel[grid](
        x, weight, bias if bias is not None else weight, out,
        residual if residual is not None else x, norm_weight if norm_weight is not None else weight,
        new_res if new_res is not None else out,
        m, n, k, x.stride(0), float(eps), *rope_args, n // 2,
        sumsq if sumsq is not None else x, add_residual if add_residual is not None else x,
        sumsq_out if sumsq_out is not None else x, trace,
        BM=bm, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        PROLOGUE=prologue, HAS_RES=residual is not None, HAS_BIAS=bias is not None,
        USE_DOT=cfg.use_dot, EMULATE_RNE=_INTERPRET, PDL=pdl, PRELOAD=_PRELOAD_TILES,
        ROPE=rope is not None, HEAD_DIM=head_dim, SILU_MUL=silu_mul,
        ADD_RESIDUAL=add_residual is not None, SLOTS=SUMSQ_SLOTS, SLOT_STRIDE=SUMSQ_STRIDE,
        LOOP_TILES=cfg.loop_tiles, TRACE=traced, ACC3=cfg.acc3 and bm > 1 and not cfg.use_dot,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **pdl_launch_kwargs(pdl),
    )
    return out, new_res


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  config: SkinnyConfig | None = None, rope: RopeKVStore | None = None,
                  silu_mul: bool = False, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for x [M <= MAX_M, K]; with `rope`, then the rotary and KV
    store; with `silu_mul`, silu_and_mul of a [gate | up] output ([2I, K] weight -> [M, I]).
    out_dtype float32: `F.linear(...).float()` in one kernel (the LM head's logits)."""
    return _launch(x, weight, bias, x.shape[-1], PROLOGUE_NONE, config=config, rope=rope, silu_mul=silu_mul,
                   out_dtype=out_dtype)[0]


def skinny_linear_residual(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor, sumsq_out: torch.Tensor,
                           bias: torch.Tensor | None = None, config: SkinnyConfig | None = None) -> torch.Tensor:
    """stream = residual + F.linear(x, weight, bias), both terms rounded to the dtype as
    separate ops would (`rms_norm_ref`'s add); each stream row's sum of squares is added
    into sumsq_out (`new_sumsq(M)`), for `skinny_rmsnorm_linear(..., sumsq=)`."""
    return _launch(x, weight, bias, x.shape[-1], PROLOGUE_NONE, config=config, add_residual=residual,
                   sumsq_out=sumsq_out)[0]


def skinny_rmsnorm_linear(
    x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
    weight: torch.Tensor, bias: torch.Tensor | None = None, config: SkinnyConfig | None = None,
    rope: RopeKVStore | None = None, silu_mul: bool = False, sumsq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(F.linear(rmsnorm(x + residual) * norm_weight, weight, bias), x + residual); with
    `rope`, the rotary and KV store follow the projection; with `silu_mul`, the SiLU-and-mul
    of a [gate | up] output (as `skinny_linear`). With `sumsq` (from `skinny_linear_residual`,
    which produced x; residual None) the rows' sums of squares are not recomputed.

    Without a residual the second value is x itself (the residual stream starts there)."""
    k = x.shape[-1]
    if norm_weight.shape != (k,):
        raise ValueError(f"skinny_rmsnorm_linear: norm weight {tuple(norm_weight.shape)} != ({k},)")
    if residual is not None and (residual.shape != x.shape or not residual.is_contiguous()):
        raise ValueError(f"skinny_rmsnorm_linear: residual {tuple(residual.shape)} must be a contiguous {tuple(x.shape)}")
    if sumsq is not None and residual is not None:
        raise ValueError("skinny_rmsnorm_linear: sumsq describes x alone; add the residual first")
    prologue = PROLOGUE_RMSNORM if sumsq is None else PROLOGUE_RMSNORM_PRESUMMED
    out, new_res = _launch(x, weight, bias, k, prologue, residual, norm_weight.contiguous(), eps, config,
                           rope, silu_mul, sumsq=sumsq)
    return out, (new_res if new_res is not None else x)
