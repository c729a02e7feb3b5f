"""Paged decode attention: one query token per sequence over its paged KV context, with
GQA and flash-decoding (split-K). Semantics: `reference.paged_decode_attention_ref`.

Work decomposition. A program owns (sequence b, KV head h, split s): it loads each K/V
tile of its token range ONCE and uses it for all GROUP = Hq / Hk query heads of h, as a
[GROUP_PAD, D] x [D, BLOCK_N] tensor-core dot (GROUP_PAD >= 16 rows, the smallest dot;
the extra rows are free because decode is bound by the K/V bytes, not by FLOPs).
With few (b, h) pairs (small batch, long context) the context is cut into NUM_SPLITS
contiguous ranges handled by separate programs; each writes its normalised partial
output and log-sum-exp, then takes a ticket from a per-(b, h) counter, and the program
that finishes last merges them (out = sum_s w_s o_s / sum_s w_s, w_s = 2^(lse_s - max
lse)) and resets the counter: no second kernel, so no second launch and no second
dependency hop in the decode step (measured on an H200 at batch 1 against a separate
merge kernel: TinyLlama 865 vs 881 us per step, Llama-3-8B 4,145 vs 4,147 us). With
enough (b, h) pairs there is one split and each program writes the output directly.

The ticket (`triton_common.last_to_arrive`): every thread's partial stores, then a CTA
barrier, then one acq_rel atomic at GPU scope (release: the partials are visible before
the count is; acquire: the last program sees all the others' partials); partials are read
back with L1-bypassing loads. Counters are zero between kernels (the merger resets its own), so
kernels sharing them must run in stream order on one device, as the engine's do.

Under programmatic dependent launch (`triton_common.await_producer`), where the grid is
small (at most one program per SM), a program loads its first K/V tile before it waits for
the kernel before: every position but the sequence's last, whose K/V that kernel (the
rotary / KV store) writes. So the paged KV of a decode step may be written by the step's
kernels at each sequence's last position only; block tables and lengths are step inputs.

CUDA graphs: the grid, NUM_SPLITS and the workspace size depend only on tensor shapes
and on static Python ints (max_seq_len, the device's SM count), never on tensor data; the
per-sequence split ranges are computed on the device from seq_lens. No host sync.

Bytes (the roofline number): K and V of every context token read once,
2 * sum(seq_lens) * Hk * D * elem_size; q, out and the split workspace are noise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import INTERPRET as _INTERPRET
from titaninfer.kernels.triton_common import (
    await_producer,
    check_paged_inputs,
    device_sms,
    last_to_arrive,
    pdl_launch_kwargs,
    pdl_mode,
    round_to,
    stamp,
    trace_slot,
    zeroed_counters,
)

_MIN_TOKENS_PER_SPLIT = 256  # below this a split costs more in merging than it gains
_MAX_SPLITS = 64
# With the default config a program uses ~103 registers x 128 threads and ~39 KiB of
# shared memory, so 4 fit on an SM (measured on H100 with ncu). Splitting aims to fill
# those slots in ONE wave (a partial second wave would double the time of its programs);
# (b, h) pairs alone are enough once they cover 2 programs per SM.
_SLOTS_PER_SM = 4
_NO_SPLIT_PER_SM = 2
# Load the first K/V tile (all but this step's token) before the PDL wait, where the grid
# has at most one program per SM (batch 1 with a few KV heads): its K/V then stream in while
# the qkv projection runs. With more programs the tile held in registers across the wait
# costs residency. Captured batch-1 step, H200, us, preloading vs not (A/B in one call, two
# reps): TinyLlama 764.4 vs 814.8 (32 programs), Llama-3-8B 3,802 vs 3,841 (64), Qwen3-0.6B
# 873.4 vs 851.3 (512: 64 splits sized for its 40K context; short contexts have taken the
# one-program-per-SM grid below since da81af8). False: never (A/B).
PRELOAD_FIRST_TILE = True
# Where the first tile is preloaded (batch 1), the kernel is bound by its own chain after
# the wait, not by K/V bytes (benchmarks/kernel_trace.py, TinyLlama: 4.1 us from the
# release to the last partial output, then 1.0 us to the ticket and 0.8-1.0 us of merge).
# Tried there, captured step, H200, us, two reps (c79afff, knobs since removed): 8 warps
# 734.4 / 734.5 and 8 warps without pipelining 743.2 / 742.8 against 733.5 / 734.1 (4
# warps, 2 stages: decode_config's); Llama-3-8B 3,869 in all three. Also tried: 64-token
# tiles (`_TILE_ELEMS` 4096: 5 filled splits at 257 tokens) 743.4 / 742.7 against 729.7 /
# 729.4; and loading the new row into the preloaded tile through the load's `other`
# instead of a select (fewer instructions and registers in an sm_90 compile) 733.5 / 734.1
# against ~725 expected: both reverted.
# Also tried (0a41fb5, reverted): the step's own token scored apart from the preloaded tile
# (q . k_new elementwise, one more term of the online softmax) instead of selected into it,
# so that the tile's K and V reach the tensor cores' operand layout before the wait: ~560
# instead of ~845 SASS instructions after the wait (sm_90), 1 us less from the release to
# the partial outputs (kernel_trace.py), yet the captured TinyLlama step took 753.5 /
# 752.9 us against 722.0 / 722.1, and 754.0 / 753.8 against 724.3 / 725.8 in a second call.
# The layout conversion then waits for the preloaded K/V before the program reaches its
# wait, and the programs are resident only ~1.3 us before the release: the loads' latency
# moved onto the chain.
# Where the (b, h) pairs cover at most half the SMs and the context bound is short (at most
# _ONE_WAVE_MAX_TILES tile per program): one program per SM, splits of at most
# _ONE_WAVE_SPLIT_TOKENS tokens (or one tile, if shorter) while the SMs last, every
# program preloading its first tile.
# Captured batch-1 step, H200, us, context 256, one call, two reps, against the slots rule
# (256-token splits): TinyLlama 714.5 / 714.5 against 717.0 / 717.8 (32 splits instead of
# 8), Qwen3-0.6B 717.6 / 717.4 against 783.3 / 783.1 (16 instead of 64: 128 programs
# instead of 512), Llama-3-8B 3,745.2 / 3,744.9 against 3,820.3 / 3,820.0 (16 instead of
# 32). At long contexts one program per SM keeps too little K/V in flight (attention
# alone, B=1, 32K context, 32/8 heads x 128: 75.7 us at 16 splits against 43.2 at 64; 128
# programs stream ~1.75 TB/s where 512 reach 3-3.5), hence the bound on tiles per program,
# and decode graphs captured per context tier (`context_tiers`). With them (da81af8),
# another call (another machine), Llama-3-8B: 3,799.0 / 3,799.9 against 3,866.3 / 3,866.2 with the
# slots rule and 3,798.2 / 3,798.6 with one wave from the full 8,192-token bound (the same
# grid); TinyLlama 712.7, Qwen3-0.6B 715.0. Every program there held one tile (the
# preloaded one). With two (the bound at 2 tiles then), batch 4 lost: Llama-3-8B, context
# 256, 4 splits of two 64-token tiles, 4,590.1 against 4,558.0 us for the slots rule (16
# splits of one tile, 512 programs); hence one tile, the preloaded one, per program.
# Batches 2-8 at one tile are not yet measured in a step. _ONE_WAVE_MAX_TILES 0: the slots
# rule at every batch (A/B).
_ONE_WAVE_SPLIT_TOKENS = 64
_ONE_WAVE_MAX_TILES = 1
_TILE_ELEMS = 8192  # elements of one K (or V) tile: BLOCK_N = _TILE_ELEMS // D, 16 to 128
_MERGE_TILE = 8192  # floats of partial outputs the merging program loads at once (64 registers/thread)


@triton.jit
def _kv_pointers(kc_ptr, vc_ptr, bt_row, n, ok, kvh, d, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2,
                 KV_BLOCK: tl.constexpr):
    """Addresses of K and V [BLOCK_N, D] at positions n of one sequence and KV head: a
    per-token block lookup, since a tile may span several KV blocks (or part of one)."""
    blk = tl.load(bt_row + n // KV_BLOCK, mask=ok, other=0).to(tl.int64)
    off = n % KV_BLOCK
    k_ptrs = kc_ptr + (blk * kc_s0 + off * kc_s1 + kvh * kc_s2)[:, None] + d[None, :]
    v_ptrs = vc_ptr + (blk * vc_s0 + off * vc_s1 + kvh * vc_s2)[:, None] + d[None, :]
    return k_ptrs, v_ptrs


@triton.jit
def _split0_index(b, num_q_heads, heads, NUM_SPLITS: tl.constexpr):
    """Index of split 0 of (sequence b, query heads) in the [B, Hq, NUM_SPLITS] partials."""
    return (b.to(tl.int64) * num_q_heads + heads) * NUM_SPLITS


@triton.jit
def _attend_tile(q, k, v, n_ok, m_i, l_i, acc, qk_scale_log2, DOT_DTYPE: tl.constexpr):
    """One online-softmax step over a K/V tile (base 2): the new (max, sum, output)."""
    s = tl.dot(q, tl.trans(k.to(DOT_DTYPE))) * qk_scale_log2  # [GROUP_PAD, BLOCK_N]
    s = tl.where(n_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE))
    return m_new, l_i, acc


@triton.jit
def _attend_later_tiles(q, kc_ptr, vc_ptr, bt_row, lo, hi, kvh, d, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2,
                        m_i, l_i, acc, qk_scale_log2, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
                        DOT_DTYPE: tl.constexpr):
    """The online softmax over the split's tiles after its first, [lo + BLOCK_N, hi)."""
    for start in range(lo + BLOCK_N, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        k_ptrs, v_ptrs = _kv_pointers(kc_ptr, vc_ptr, bt_row, n, n_ok, kvh, d, kc_s0, kc_s1, kc_s2,
                                      vc_s0, vc_s1, vc_s2, KV_BLOCK)
        k = tl.load(k_ptrs, mask=n_ok[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        m_i, l_i, acc = _attend_tile(q, k, v, n_ok, m_i, l_i, acc, qk_scale_log2, DOT_DTYPE)
    return m_i, l_i, acc


# Block-table width changes with the longest sequence in eager steps: not specialised.
@triton.jit(do_not_specialize=["seq_lens_ptr", "bt_ptr", "bt_s0"])
def _decode_split_kernel(
    q_ptr, kc_ptr, vc_ptr, seq_lens_ptr, bt_ptr, out_ptr, part_o_ptr, part_lse_ptr, ticket_ptr, trace_ptr,
    qk_scale_log2,
    q_s0, q_s1, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2, bt_s0, o_s0, o_s1,
    num_q_heads,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, MERGE_CHUNK: tl.constexpr,
    MERGE_ROWS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, EMULATE_RNE: tl.constexpr, PDL: tl.constexpr, PRELOAD: tl.constexpr,
    TRACE: tl.constexpr = False,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    # Trace stamps: start, after the wait, partial output computed, ticket taken, merged.
    prog = (b * tl.num_programs(1) + kvh) * NUM_SPLITS + split
    stamp(trace_ptr, prog, 0, prog, 5, TRACE)
    if not PRELOAD:
        await_producer(PDL)
        stamp(trace_ptr, prog, 1, prog, 5, TRACE)
    seq_len = tl.load(seq_lens_ptr + b)  # a step input: no kernel of the step writes it
    # Equal, BLOCK_N-aligned ranges of this sequence's own length: short sequences leave
    # trailing splits empty instead of giving every split a sliver.
    per_split = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * per_split
    hi = tl.minimum(lo + per_split, seq_len)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM)
    g_ok = g < GROUP
    heads = kvh * GROUP + g
    bt_row = bt_ptr + b.to(tl.int64) * bt_s0
    # PRELOAD: the first tile's K/V loads before the wait (under PDL while the qkv
    # projection still runs): every position but the last was written by earlier steps;
    # the last one, this step's token, is the only one a kernel before this one writes.
    n = lo + tl.arange(0, BLOCK_N)
    n_ok = n < hi
    k_ptrs, v_ptrs = _kv_pointers(kc_ptr, vc_ptr, bt_row, n, n_ok, kvh, d, kc_s0, kc_s1, kc_s2, vc_s0, vc_s1, vc_s2,
                                  KV_BLOCK)
    if PRELOAD:
        old = n_ok & (n < seq_len - 1)
        k = tl.load(k_ptrs, mask=old[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=old[:, None], other=0.0)
        await_producer(PDL)  # q and this step's K/V are written by the kernel before
        stamp(trace_ptr, prog, 1, prog, 5, TRACE)
        new = n_ok & (n == seq_len - 1)  # one row, its address known: one round trip, beside q's
        k = tl.where(new[:, None], tl.load(k_ptrs, mask=new[:, None], other=0.0), k)
        v = tl.where(new[:, None], tl.load(v_ptrs, mask=new[:, None], other=0.0), v)
    else:
        k = tl.load(k_ptrs, mask=n_ok[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
    q = tl.load(q_ptr + b.to(tl.int64) * q_s0 + heads[:, None] * q_s1 + d[None, :],
                mask=g_ok[:, None], other=0.0).to(DOT_DTYPE)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    if lo < hi:  # an empty split adds nothing (and must not: its scores are all -inf)
        m_i, l_i, acc = _attend_tile(q, k, v, n_ok, m_i, l_i, acc, qk_scale_log2, DOT_DTYPE)
    # Entered only where the split has a later tile, so that the software pipeline's prologue
    # (~160 SASS instructions of cp.async and addresses, sm_90) is not on every short split's
    # chain. Captured batch-1 step, H200, us, one call (b7145a1): TinyLlama 719.7 against
    # 726.9 / 727.5 without the if; Llama-3-8B 3,867.3 against 3,869.0.
    if lo + BLOCK_N < hi:
        m_i, l_i, acc = _attend_later_tiles(q, kc_ptr, vc_ptr, bt_row, lo, hi, kvh, d, kc_s0, kc_s1, kc_s2,
                                            vc_s0, vc_s1, vc_s2, m_i, l_i, acc, qk_scale_log2,
                                            KV_BLOCK, BLOCK_N, DOT_DTYPE)

    has = l_i > 0.0  # false only for an empty range (seq_len 0 or a trailing split)
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    if TRACE:
        stamp(trace_ptr, prog, 2, tl.sum(tl.sum(o, 1), 0).to(tl.int32, bitcast=True), 5, TRACE)
    if NUM_SPLITS == 1:
        dst = out_ptr + b.to(tl.int64) * o_s0 + heads[:, None] * o_s1 + d[None, :]
        tl.store(dst, round_to(o, out_ptr.dtype.element_ty, EMULATE_RNE), mask=g_ok[:, None])
    else:
        first = _split0_index(b, num_q_heads, heads, NUM_SPLITS)
        tl.store(part_o_ptr + (first + split)[:, None] * HEAD_DIM + d[None, :], o, mask=g_ok[:, None])
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + first + split, lse, mask=g_ok)
        _take_ticket_and_merge(part_o_ptr, part_lse_ptr, out_ptr, ticket_ptr, seq_len, per_split,
                               b, kvh, num_q_heads, d, o_s0, o_s1, trace_ptr, prog,
                               NUM_SPLITS, MERGE_CHUNK, GROUP, MERGE_ROWS, HEAD_DIM, EMULATE_RNE, TRACE)


@triton.jit
def _take_ticket_and_merge(part_o_ptr, part_lse_ptr, out_ptr, ticket_ptr, seq_len, per_split,
                           b, kvh, num_q_heads, d, o_s0, o_s1, trace_ptr, prog,
                           NUM_SPLITS: tl.constexpr, MERGE_CHUNK: tl.constexpr, GROUP: tl.constexpr,
                           MERGE_ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, EMULATE_RNE: tl.constexpr,
                           TRACE: tl.constexpr):
    """After this program's partial stores: count it in; the last split of (b, kvh) merges.
    The merge works on MERGE_ROWS >= GROUP rows (not the dot's GROUP_PAD >= 16): its tile
    of partial outputs sets the kernel's register count, which decides how early the
    program can be resident beside the qkv projection's."""
    ticket_at = ticket_ptr + b * tl.num_programs(1) + kvh
    last = last_to_arrive(ticket_at, NUM_SPLITS)
    stamp(trace_ptr, prog, 3, last.to(tl.int32), 5, TRACE)
    if last:
        # Splits past the context are empty (weight 0): merge only the filled ones.
        n_filled = tl.where(per_split > 0, tl.cdiv(seq_len, tl.maximum(per_split, 1)), 0)
        g = tl.arange(0, MERGE_ROWS)
        g_ok = g < GROUP
        heads = kvh * GROUP + g
        first = _split0_index(b, num_q_heads, heads, NUM_SPLITS)
        merged = _merge_splits(part_o_ptr, part_lse_ptr, out_ptr, first, n_filled, b, heads, g_ok, d, o_s0, o_s1,
                               MERGE_ROWS, HEAD_DIM, MERGE_CHUNK, EMULATE_RNE)
        tl.store(ticket_at, 0)  # zero again for the next layer / step
        if TRACE:
            stamp(trace_ptr, prog, 4, tl.sum(tl.sum(merged, 1), 0).to(tl.int32, bitcast=True), 5, TRACE)


@triton.jit
def _merge_splits(part_o_ptr, part_lse_ptr, out_ptr, first, n_filled, b, heads, g_ok, d, o_s0, o_s1,
                  ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr,
                  EMULATE_RNE: tl.constexpr):
    """out[b, heads] = the lse-weighted mean of splits 0..n_filled-1's partial outputs (all
    empty: zeros). CHUNK splits per iteration, all their loads in flight at once (an
    [ROWS, CHUNK, D] tile of ~8K floats), merged online (running max, rescaled sums):
    a short context costs one L2 round trip. .cg: read from L2, where the other programs'
    stores are, never from a stale L1 line."""
    m = tl.full([ROWS], float("-inf"), tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], tl.float32)
    denom = tl.zeros([ROWS], tl.float32)
    c = tl.arange(0, CHUNK)
    for s0 in range(0, n_filled, CHUNK):
        rows = first[:, None] + (s0 + c)[None, :]  # [ROWS, CHUNK]
        ok = g_ok[:, None] & (s0 + c < n_filled)[None, :]
        lse = tl.load(part_lse_ptr + rows, mask=ok, other=float("-inf"), cache_modifier=".cg")
        o = tl.load(part_o_ptr + rows[:, :, None] * HEAD_DIM + d[None, None, :], mask=ok[:, :, None], other=0.0,
                    cache_modifier=".cg")
        m_new = tl.maximum(m, tl.max(lse, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing seen yet: weights stay 0
        rescale = tl.exp2(m - m_ref)
        w = tl.exp2(lse - m_ref[:, None])
        acc = acc * rescale[:, None] + tl.sum(o * w[:, :, None], 1)
        denom = denom * rescale + tl.sum(w, 1)
        m = m_new
    res = acc / tl.where(denom > 0.0, denom, 1.0)[:, None]
    dst = out_ptr + b.to(tl.int64) * o_s0 + heads[:, None] * o_s1 + d[None, :]
    tl.store(dst, round_to(res, out_ptr.dtype.element_ty, EMULATE_RNE), mask=g_ok[:, None])
    return res


def _round_down_pow2(n: int) -> int:
    """The largest power of two <= n (n >= 1): NUM_SPLITS is a constexpr, so eager steps,
    whose batch and context change every step, compile at most log2(_MAX_SPLITS) + 1
    split counts."""
    return 1 << (n.bit_length() - 1)


def _one_wave_splits(batch: int, num_kv_heads: int, num_sms: int) -> int:
    """Splits of the one-program-per-SM grid (0 where it does not apply: too many (b, h)
    pairs, or the rule is off)."""
    base = max(batch * num_kv_heads, 1)
    if not (_ONE_WAVE_MAX_TILES and PRELOAD_FIRST_TILE and 2 * base <= num_sms):
        return 0
    return _round_down_pow2(min(num_sms // base, _MAX_SPLITS))


def one_wave_max_context(batch: int, num_kv_heads: int, num_sms: int, block_n: int) -> int:
    """The longest context bound for which `choose_num_splits` picks the one-program-per-SM
    grid (0: none): each program then holds at most _ONE_WAVE_MAX_TILES tiles."""
    return _one_wave_splits(batch, num_kv_heads, num_sms) * block_n * _ONE_WAVE_MAX_TILES


def choose_num_splits(batch: int, num_kv_heads: int, max_context: int, num_sms: int, block_n: int) -> int:
    """Splits per (sequence, KV head), for tiles of block_n tokens. Static ints only, so
    the choice is CUDA-graph safe.

    Few (b, h) pairs (at most half the SMs, e.g. batch 1) and a context bound short enough
    for at most _ONE_WAVE_MAX_TILES tiles per program: one program per SM, as many splits
    as fit, so that every program preloads its first tile before the PDL wait. Otherwise
    enough programs to fill the SMs' ~_SLOTS_PER_SM slots in one wave (what long contexts
    need for bandwidth), none shorter than _MIN_TOKENS_PER_SPLIT tokens."""
    base = max(batch * num_kv_heads, 1)
    if base >= num_sms * _NO_SPLIT_PER_SM:
        return 1
    if max_context <= one_wave_max_context(batch, num_kv_heads, num_sms, block_n):
        # Splits of at most min(64, block_n) tokens, rounded up to a power of two: every
        # program's range then fits its tile(s) (rounding down could double a range).
        by_len = triton.next_power_of_2(-(-max_context // min(_ONE_WAVE_SPLIT_TOKENS, block_n)))
        return min(_one_wave_splits(batch, num_kv_heads, num_sms), by_len)
    by_len = max(1, max_context // _MIN_TOKENS_PER_SPLIT)
    return _round_down_pow2(max(1, min(num_sms * _SLOTS_PER_SM // base, by_len, _MAX_SPLITS)))


def preloads(batch: int, num_kv_heads: int, num_splits: int, num_sms: int) -> bool:
    """Whether the kernel loads its first tile before the PDL wait (its PRELOAD constexpr):
    where the grid has at most one program per SM."""
    return PRELOAD_FIRST_TILE and batch * num_kv_heads * num_splits <= num_sms


def warm_up_calls(num_kv_heads: int, num_sms: int) -> list[tuple[int, int]]:
    """(batch, num_splits) of calls that together compile every kernel variant a step can
    pick: each power-of-two split count, with and without the preload (PRELOAD depends on
    the batch, NUM_SPLITS on the batch and the context; the other constexprs on the model)."""
    calls = []
    splits = 1
    while splits <= _MAX_SPLITS:
        calls.append((1, splits))
        if preloads(1, num_kv_heads, splits, num_sms):  # then the same count without preload
            calls.append((num_sms // (num_kv_heads * splits) + 1, splits))
        splits *= 2
    return calls


def context_tiers(batch: int, num_kv_heads: int, max_context: int, num_sms: int, head_dim: int) -> tuple[int, ...]:
    """Static context bounds (ascending, the last = max_context) at which this batch's
    decode attention takes a different grid: a CUDA graph captured per tier, and replayed
    with the smallest tier >= the step's longest sequence, gets the grid its contexts need
    (`runner/cuda_graph.DecodeGraphs`)."""
    block_n = decode_config(head_dim)[0]
    short = one_wave_max_context(batch, num_kv_heads, num_sms, block_n)
    if 0 < short < max_context and (choose_num_splits(batch, num_kv_heads, short, num_sms, block_n)
                                    != choose_num_splits(batch, num_kv_heads, max_context, num_sms, block_n)):
        return (short, max_context)
    return (max_context,)


def decode_config(head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_N, num_warps, num_stages) by head dim: a K+V tile of 32 KiB (bf16) per stage,
    double-buffered; four programs fit per SM. Chosen by `bench.kernels --sweep` on H100:
    within 1-2% of the best of 7 configs at B=64/4K, B=8/8K and B=1/32K."""
    block_n = max(16, min(128, _TILE_ELEMS // head_dim))
    return block_n, 4, 2


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    max_seq_len: int | None = None,
    out: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
    config: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """q: [B, Hq, D] -> [B, Hq, D] (q's dtype; written into `out` when given).

    k_cache/v_cache: [num_blocks, block_size, Hk, D] fp16/bf16; seq_lens: [B] int32 (a 0
    gives a zero output row); block_tables: [B, max_blocks] int32. max_seq_len, when
    given, is a static upper bound on seq_lens (it only lowers the split count; under CUDA
    graphs pass the same value at capture and replay). Under PDL the kernels just before
    may have written each sequence's last K/V position, none of its earlier ones. num_splits / config override the
    heuristics (tests, tuning). D must be a power of two in [16, 256]; Hq % Hk == 0.
    """
    b, hq, d = q.shape
    kv_block, hk = check_paged_inputs(q, k_cache, v_cache)
    if seq_lens.shape != (b,) or block_tables.dim() != 2 or block_tables.shape[0] != b:
        raise ValueError(f"seq_lens {tuple(seq_lens.shape)} / block_tables "
                         f"{tuple(block_tables.shape)} do not match batch {b}")
    if out is None:
        out = torch.empty((b, hq, d), dtype=q.dtype, device=q.device)
    elif out.shape != (b, hq, d) or out.stride(-1) != 1:
        raise ValueError(f"out must be [{b}, {hq}, {d}] with a contiguous last dim")
    if b == 0:
        return out

    block_n, num_warps, num_stages = config or decode_config(d)
    if num_splits is None:
        max_context = block_tables.shape[1] * kv_block
        if max_seq_len is not None:
            max_context = min(max_context, max_seq_len)
        num_splits = choose_num_splits(b, hk, max_context, device_sms(q.device), block_n)
    group = hq // hk
    group_pad = max(16, triton.next_power_of_2(group))
    merge_rows = triton.next_power_of_2(group)
    dot_dtype = tl.float32 if _INTERPRET else (
        tl.bfloat16 if k_cache.dtype == torch.bfloat16 else tl.float16)
    if num_splits > 1:
        part_o = torch.empty((b, hq, num_splits, d), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((b, hq, num_splits), dtype=torch.float32, device=q.device)
        tickets = zeroed_counters(q.device, b * hk, "decode_attention")
    else:
        part_o = part_lse = tickets = out  # never touched: the kernel writes `out` directly
    pdl = pdl_mode(q.device)
    preload = preloads(b, hk, num_splits, device_sms(q.device))
    trace, traced = trace_slot("attn", b * hk * num_splits, 5, out)
    _decode_split_kernel[(b, hk, num_splits)](
        q, k_cache, v_cache, seq_lens, block_tables, out, part_o, part_lse, tickets, trace,
        scale * 1.4426950408889634,  # log2(e): softmax in base 2 (exp2 is one instruction)
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), hq,
        GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=d,
        KV_BLOCK=kv_block, BLOCK_N=block_n, NUM_SPLITS=num_splits,
        MERGE_CHUNK=min(triton.next_power_of_2(num_splits), max(1, _MERGE_TILE // (merge_rows * d))),
        MERGE_ROWS=merge_rows,
        DOT_DTYPE=dot_dtype, EMULATE_RNE=_INTERPRET, PDL=pdl,
        PRELOAD=preload, TRACE=traced,
        num_warps=num_warps, num_stages=num_stages, **pdl_launch_kwargs(pdl),
    )
    return out
