"""The batch-1 MLP block in one persistent kernel: norm, gate_up, SiLU-and-mul, grid
barrier, down, residual add.

    stream_out = stream + down(silu(gate) * up)   with [gate | up] = gate_up(rmsnorm(stream))

for one token (M = 1), the stream's sums of squares given (`skinny_gemm.new_sumsq`, from
the o projection's residual epilogue) and the output's accumulated into `sumsq_out` for
the next norm, exactly as the three-kernel chain does it (norm kernel or presummed
prologue, `skinny_linear(..., silu_mul=True)`, `skinny_linear_residual`).

Why one kernel: at batch 1 every kernel boundary costs ~2 us (the tail of one GEMV, the
release of the next one's wait, its first loads), about 10% of a TinyLlama MLP's 17 us of
weights. Here a grid of `programs_per_sm` x SMs programs (all resident at once) walks the
gate_up row tiles in a grid-stride loop, stores the activations h, meets at a grid-wide
barrier, and walks the down row tiles. Before it waits at the barrier each program has
already loaded its first down tile's leading chunks (weights: no kernel writes them), so the
barrier's ~1.6 us overlaps with HBM traffic instead of adding to it; within each phase a
program loads its next tile's leading chunks before finishing the current one.

Bit-equality: tiles, chunks, float32 products, the per-row reduction, the roundings and the
float64 sums of squares are the skinny kernel's (each phase `pick_config`'s tile for its
projection, 4 warps), so the output equals the chain's bit for bit
(tests/kernels/test_persistent_mlp.py).

Deadlock freedom: the barrier needs every program running at once. The grid is capped by
the compiled kernel's occupancy (registers, shared memory, warps per SM). Under PDL a
dependent kernel may launch only once every program of this one has triggered, i.e. is
resident, so it cannot take the slots a program of this grid still needs.

Under Triton's interpreter (CPU tests) programs run one after the other and a barrier would
never open: the two phases run as two launches of the same grid instead (`PHASES`).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from titaninfer.kernels.skinny_gemm import (
    SUMSQ_SLOTS,
    _check_sumsq,
    _output_rows,
    _partner_lanes,
    _silu_mul,
    _weight_tile,
    pick_config,
)
from titaninfer.kernels.triton_common import (
    INTERPRET,
    await_producer,
    barrier_words,
    device_sms,
    grid_barrier,
    pdl_launch_kwargs,
    pdl_mode,
    rms_rstd,
    round_to,
    sum_squares,
)

PHASE_GATE_UP, PHASE_DOWN, PHASE_BOTH = 1, 2, 3
# Programs per SM: the probe (benchmarks/persistent_probe.py, H200) streamed a grid-stride
# GEMV at 3.69 TB/s with 4 and 4.11 with 8, where a barrier costs 1.6 / 3.0 us.
PROGRAMS_PER_SM = 4
_NUM_WARPS = 4  # the skinny kernel's at M = 1: same layout, same reduction order
_INTERPRET_PROGRAMS = 3  # under the interpreter: a few programs, each with several tiles


@triton.jit
def _normed_chunk(x_ptr, nw_ptr, k0, K, rstd, dtype: tl.constexpr, BLOCK_K: tl.constexpr,
                  EMULATE_RNE: tl.constexpr):
    """[1, BLOCK_K] float32 of rmsnorm(x) * nw at columns k0.. (the presummed prologue's
    roundings: x * rstd, then * w, each rounded to the dtype); zeros past K."""
    ks = k0 + tl.arange(0, BLOCK_K)
    ok = ks < K
    x = tl.load(x_ptr + ks, mask=ok, other=0.0).to(tl.float32)[None, :]
    normed = round_to(x * rstd, dtype, EMULATE_RNE).to(tl.float32)
    w = tl.load(nw_ptr + ks, mask=ok, other=0.0).to(tl.float32)[None, :]
    return round_to(normed * w, dtype, EMULATE_RNE).to(tl.float32)


@triton.jit
def _h_chunk(h_ptr, k0, INTER, BLOCK_K: tl.constexpr):
    """[1, BLOCK_K] float32 of the activations at k0.. (zeros past INTER). Other programs stored
    them in this kernel: .cg reads L2, never a stale L1 line."""
    ks = k0 + tl.arange(0, BLOCK_K)
    return tl.load(h_ptr + ks, mask=ks < INTER, other=0.0, cache_modifier=".cg").to(tl.float32)[None, :]


@triton.jit
def _gate_up_tile(tile, w0, w1, wgu_ptr, x_ptr, nw_ptr, h_ptr, rstd, K, INTER, lanes,
                  dtype: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EMULATE_RNE: tl.constexpr):
    """h[j..] = silu(gate) * up for gate_up tile `tile` (BLOCK_N/2 gate rows j.. and their up
    rows INTER + j..), w0 / w1 its first two weight chunks, already loaded."""
    HALF: tl.constexpr = BLOCK_N // 2
    rows = _output_rows(tile, lanes, 0, INTER, BLOCK_N, False, 2, True)
    n_ok = (tile.to(tl.int64) * HALF + lanes % HALF) < INTER
    w_rows = wgu_ptr + rows[:, None] * K
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc += w0.to(tl.float32) * _normed_chunk(x_ptr, nw_ptr, 0, K, rstd, dtype, BLOCK_K, EMULATE_RNE)
    acc += w1.to(tl.float32) * _normed_chunk(x_ptr, nw_ptr, BLOCK_K, K, rstd, dtype, BLOCK_K, EMULATE_RNE)
    for k0 in range(2 * BLOCK_K, K, BLOCK_K):
        w = _weight_tile(w_rows, n_ok, k0, K, BLOCK_K)
        acc += w.to(tl.float32) * _normed_chunk(x_ptr, nw_ptr, k0, K, rstd, dtype, BLOCK_K, EMULATE_RNE)
    y = round_to(tl.sum(acc, axis=1), dtype, EMULATE_RNE).to(tl.float32)[None, :]  # as if stored
    act = _silu_mul(y, _partner_lanes(y, lanes, BLOCK_N))
    tl.store(h_ptr + rows[None, :], round_to(act, dtype, EMULATE_RNE), mask=(n_ok & (lanes < HALF))[None, :])


@triton.jit
def _down_tile(tile, w0, w1, wd_ptr, h_ptr, x_ptr, out_ptr, sq_out_ptr, H, INTER, lanes,
               dtype: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SLOTS: tl.constexpr,
               EMULATE_RNE: tl.constexpr):
    """out[rows] = round(round(down(h)[rows]) + x[rows]) for down tile `tile` (BLOCK_N rows of
    the [H, INTER] weight), its sum of squares added into one of the SLOTS accumulators."""
    rows = tile.to(tl.int64) * BLOCK_N + lanes
    n_ok = rows < H
    w_rows = wd_ptr + rows[:, None] * INTER
    stream_in = tl.load(x_ptr + rows, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc += w0.to(tl.float32) * _h_chunk(h_ptr, 0, INTER, BLOCK_K)
    acc += w1.to(tl.float32) * _h_chunk(h_ptr, BLOCK_K, INTER, BLOCK_K)
    for k0 in range(2 * BLOCK_K, INTER, BLOCK_K):
        w = _weight_tile(w_rows, n_ok, k0, INTER, BLOCK_K)
        acc += w.to(tl.float32) * _h_chunk(h_ptr, k0, INTER, BLOCK_K)
    y = round_to(tl.sum(acc, axis=1), dtype, EMULATE_RNE).to(tl.float32)[None, :]
    stream = round_to(y + stream_in, dtype, EMULATE_RNE)
    tl.atomic_add(sq_out_ptr + tile % SLOTS + tl.arange(0, 1), sum_squares(stream.to(tl.float32)), sem="relaxed")
    tl.store(out_ptr + rows[None, :], stream, mask=n_ok[None, :])


@triton.jit
def _persistent_mlp_kernel(
    x_ptr, sq_in_ptr, nw_ptr, wgu_ptr, wd_ptr, h_ptr, out_ptr, sq_out_ptr, sync_ptr,
    H, INTER, eps, n_programs,
    GU_N: tl.constexpr, GU_K: tl.constexpr, DOWN_N: tl.constexpr, DOWN_K: tl.constexpr,
    SLOTS: tl.constexpr, PHASES: tl.constexpr,
    EMULATE_RNE: tl.constexpr, PDL: tl.constexpr,
):
    pid = tl.program_id(0)
    dtype = out_ptr.dtype.element_ty

    if PHASES & 1:
        # Weights first (no kernel writes them): the first tile's two leading chunks stream in
        # while the kernel before (the o projection) finishes.
        lanes = tl.arange(0, GU_N)
        HALF: tl.constexpr = GU_N // 2
        gu_tiles = tl.cdiv(INTER, HALF)
        tile = pid
        g_rows = wgu_ptr + _output_rows(tile, lanes, 0, INTER, GU_N, False, 2, True)[:, None] * H
        g_ok = (tile.to(tl.int64) * HALF + lanes % HALF) < INTER
        w0 = _weight_tile(g_rows, g_ok, 0, H, GU_K)
        w1 = _weight_tile(g_rows, g_ok, GU_K, H, GU_K)
        await_producer(PDL)
        sq = tl.load(sq_in_ptr + tl.arange(0, SLOTS))
        rstd = rms_rstd(tl.sum(sq, axis=0), H, eps)
        while tile < gu_tiles:
            nxt = tile + n_programs  # load the next tile's leading chunks before this one's epilogue
            n_rows = wgu_ptr + _output_rows(nxt, lanes, 0, INTER, GU_N, False, 2, True)[:, None] * H
            n_ok = (nxt.to(tl.int64) * HALF + lanes % HALF) < INTER
            cur0, cur1 = w0, w1
            w0 = _weight_tile(n_rows, n_ok, 0, H, GU_K)
            w1 = _weight_tile(n_rows, n_ok, GU_K, H, GU_K)
            _gate_up_tile(tile, cur0, cur1, wgu_ptr, x_ptr, nw_ptr, h_ptr, rstd, H, INTER, lanes,
                          dtype, GU_N, GU_K, EMULATE_RNE)
            tile = nxt

    if PHASES & 2:
        # The first down tile's leading chunks, before the barrier.
        lanes = tl.arange(0, DOWN_N)
        down_tiles = tl.cdiv(H, DOWN_N)
        tile = pid
        d_rows = wd_ptr + (tile.to(tl.int64) * DOWN_N + lanes)[:, None] * INTER
        d_ok = (tile.to(tl.int64) * DOWN_N + lanes) < H
        w0 = _weight_tile(d_rows, d_ok, 0, INTER, DOWN_K)
        w1 = _weight_tile(d_rows, d_ok, DOWN_K, INTER, DOWN_K)
        if PHASES == 3:
            grid_barrier(sync_ptr, n_programs)  # every program's activations are stored
        else:
            await_producer(PDL)
        while tile < down_tiles:
            nxt = tile + n_programs
            n_rows = wd_ptr + (nxt.to(tl.int64) * DOWN_N + lanes)[:, None] * INTER
            n_ok = (nxt.to(tl.int64) * DOWN_N + lanes) < H
            cur0, cur1 = w0, w1
            w0 = _weight_tile(n_rows, n_ok, 0, INTER, DOWN_K)
            w1 = _weight_tile(n_rows, n_ok, DOWN_K, INTER, DOWN_K)
            _down_tile(tile, cur0, cur1, wd_ptr, h_ptr, x_ptr, out_ptr, sq_out_ptr, H, INTER, lanes,
                       dtype, DOWN_N, DOWN_K, SLOTS, EMULATE_RNE)
            tile = nxt


def _tiles(h: int, i: int) -> dict[str, int]:
    """Each phase's tile, the skinny kernel's for that projection (bit-equality needs it)."""
    gu, down = pick_config(1, 2 * i, h), pick_config(1, h, i)
    return dict(GU_N=gu.block_n, GU_K=gu.block_k, DOWN_N=down.block_n, DOWN_K=down.block_k)


@functools.cache
def _resident_programs_per_sm(device_index: int, n_regs: int, shared: int, num_warps: int) -> int:
    """How many programs of a kernel using n_regs registers per thread and `shared` bytes
    of shared memory fit on one SM at once (registers allocated per warp in 256s)."""
    props = torch.cuda.get_device_properties(device_index)
    regs_per_warp = -(-n_regs * 32 // 256) * 256
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // max(1, regs_per_warp * num_warps)
    by_threads = props.max_threads_per_multi_processor // (32 * num_warps)
    smem = getattr(props, "shared_memory_per_multiprocessor", 228 * 1024)
    by_smem = smem // shared if shared else by_threads
    return min(by_regs, by_threads, by_smem, 32)


def _grid(device: torch.device, kernel_args: tuple, constexprs: dict) -> int:
    """Programs of the persistent launch: PROGRAMS_PER_SM per SM, capped by occupancy so all
    are resident at once (the barrier's requirement)."""
    if INTERPRET or device.type != "cuda":
        return _INTERPRET_PROGRAMS
    compiled = _persistent_mlp_kernel.warmup(*kernel_args, grid=(1,), **constexprs,
                                             **pdl_launch_kwargs(constexprs["PDL"]))
    compiled._init_handles()
    index = device.index if device.index is not None else torch.cuda.current_device()
    per_sm = _resident_programs_per_sm(index, compiled.n_regs, compiled.metadata.shared, _NUM_WARPS)
    if per_sm < 1:
        raise RuntimeError("persistent MLP: one program does not fit on an SM")
    return min(PROGRAMS_PER_SM, per_sm) * device_sms(device)


_grids: dict[tuple, int] = {}


def persistent_mlp(x: torch.Tensor, sumsq: torch.Tensor, norm_weight: torch.Tensor, eps: float,
                   gate_up_weight: torch.Tensor, down_weight: torch.Tensor,
                   sumsq_out: torch.Tensor) -> torch.Tensor:
    """x + down(silu_and_mul(gate_up(rmsnorm(x) * norm_weight))) for one token x [1, H], the
    residual stream, whose sums of squares `sumsq` holds ([1, SUMSQ_SLOTS], `new_sumsq`);
    the result's are added into sumsq_out. gate_up_weight [2I, H] = [gate | up], down_weight
    [H, INTER]. Bit for bit the skinny three-kernel chain's result."""
    if x.dim() != 2 or x.shape[0] != 1:
        raise ValueError(f"persistent MLP: x {tuple(x.shape)} must be one token [1, H]")
    h = x.shape[1]
    i = down_weight.shape[1]
    if gate_up_weight.shape != (2 * i, h) or down_weight.shape != (h, i) or norm_weight.shape != (h,):
        raise ValueError(f"persistent MLP: gate_up {tuple(gate_up_weight.shape)}, down {tuple(down_weight.shape)}, "
                         f"norm {tuple(norm_weight.shape)} do not fit hidden size {h}")
    if x.dtype not in (torch.float16, torch.bfloat16) or {gate_up_weight.dtype, down_weight.dtype} != {x.dtype}:
        raise TypeError(f"persistent MLP: needs fp16/bf16 x and weights of one dtype, got {x.dtype}, "
                        f"{gate_up_weight.dtype}, {down_weight.dtype}")
    if not (x.is_contiguous() and gate_up_weight.is_contiguous() and down_weight.is_contiguous()):
        raise ValueError("persistent MLP: x and the weights must be contiguous")
    _check_sumsq(sumsq, 1)
    _check_sumsq(sumsq_out, 1)
    out = torch.empty_like(x)
    act = torch.empty((i,), dtype=x.dtype, device=x.device)
    sync = barrier_words(x.device)
    pdl = pdl_mode(x.device)
    constexprs = dict(**_tiles(h, i), SLOTS=SUMSQ_SLOTS, EMULATE_RNE=INTERPRET, PDL=pdl,
                      num_warps=_NUM_WARPS, num_stages=1)
    phases = [PHASE_GATE_UP, PHASE_DOWN] if INTERPRET or x.device.type != "cuda" else [PHASE_BOTH]
    key = (x.device, h, i, x.dtype, pdl)
    for phase in phases:
        args = (x, sumsq, norm_weight.contiguous(), gate_up_weight, down_weight, act, out, sumsq_out, sync,
                h, i, float(eps))
        grid = _grids.get(key)
        if grid is None:
            grid = _grids[key] = _grid(x.device, (*args, 1), dict(constexprs, PHASES=phase))
        _persistent_mlp_kernel[(grid,)](*args, grid, PHASES=phase, **constexprs, **pdl_launch_kwargs(pdl))
    return out
