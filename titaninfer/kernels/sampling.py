"""Token sampling on the device: greedy, temperature and min-p, with no host round trip.

For row b (semantics: `reference.sample_tokens_ref`, same distribution, other stream):
- temperature[b] <= 0: the first index of max(logits[b]) (greedy, as torch.argmax);
- otherwise a draw from softmax(logits[b] / T) restricted to tokens with
  p >= min_p[b] * p_max (min_p 0 keeps every token).

The draw is the exponential race (Gumbel-max): with u_i uniform, E_i = -log(u_i) is
Exp(1) and argmax_i (z_i - log E_i), z = logits / T, is distributed as softmax(z). The u_i
come from counter-based Philox keyed by seeds[b]; one Philox call gives four 32-bit
outputs, used for four tokens Q apart (token t -> counter (offsets[b] mod 2^32,
(t // 4Q) * Q + t % Q), output (t // Q) % 4, with Q fixed by the vocab size). So
(seed, offset, logits row) always give the same token, whatever the batch size or layout;
callers advance `offsets` each step.

Three launches, all with shape-only grids (CUDA-graph safe):
1. per (rows, vocab chunk): max and first argmax, and the race of sampled rows with
   min_p 0 (no threshold, so the common case reads the logits once) -> workspace;
2. per (rows, chunk) holding a sampled row with min_p > 0: the global max from the
   workspace (the threshold needs it before any token can be judged), then the race
   over the chunk, a second read -> workspace; other programs exit at once;
3. per row: merge the chunks' winners (greedy rows take the argmax).
Chunks exist so that a small batch over a 128K vocab still spreads over the SMs; large
batches use one chunk per row. A program owns BLOCK_B rows x a vocab tile; many rows per
program only for tiny (test) vocabularies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import device_sms

_MAX_Q = 1024  # a vocab tile is 4 * Q tokens: one Philox call per 4 tokens
_PROGRAMS_PER_SM = 2


@triton.jit
def _first_argmax(best, best_i, vocab):
    """Row max of `best` and the smallest column index attaining it."""
    row_max = tl.max(best, 1)
    idx = tl.min(tl.where(best == row_max[:, None], best_i, vocab), 1)
    return row_max, idx


@triton.jit
def _load(row_ptr, cols, hi, r_ok):
    return tl.load(row_ptr + cols[None, :], mask=r_ok[:, None] & (cols < hi)[None, :],
                   other=float("-inf"))


@triton.jit
def _max_update(x, cols, best, best_i):
    """Per-lane running max: strict > keeps each lane's earliest index; NaN never wins."""
    upd = x > best
    return tl.where(upd, x, best), tl.where(upd, cols[None, :], best_i)


@triton.jit
def _race_update(x, cols, bits, inv_t, z_max, log_min_p, best, best_i):
    """Race score z - log(-log(u)) for tokens passing min-p, folded into the running best."""
    z = x * inv_t[:, None]  # a multiply, not a divide: the race is compute-bound
    # 24 random bits -> u in (0, 1): never 0 or 1, so -log(u) is finite and positive.
    u = ((bits >> 8).to(tl.float32) + 0.5) * 5.960464477539063e-08
    score = z - tl.log(-tl.log(u))
    score = tl.where(z - z_max[:, None] >= log_min_p[:, None], score, float("-inf"))
    return _max_update(score, cols, best, best_i)


# The row count and the per-row parameter slices (rows of one [2, B] staging tensor, so
# their alignment follows B) change every step: not specialised, or each new batch size
# would compile a new variant mid-run (~1 s stall per kernel).
@triton.jit(do_not_specialize=["n_rows", "temp_ptr", "min_p_ptr", "seed_ptr", "offset_ptr"])
def _first_pass_kernel(
    logits_ptr, temp_ptr, min_p_ptr, seed_ptr, offset_ptr,
    ws_max_ptr, ws_arg_ptr, ws_score_ptr, ws_idx_ptr, n_rows, vocab, l_s0, chunk_len,
    NUM_CHUNKS: tl.constexpr, BLOCK_B: tl.constexpr, Q: tl.constexpr,
):
    """Per (rows, chunk): max and first argmax; plus the race for rows with min_p <= 0,
    which needs no threshold and so no second read of the logits."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    chunk = tl.program_id(1)
    r_ok = rows < n_rows
    temp = tl.load(temp_ptr + rows, mask=r_ok, other=0.0)
    race = (temp > 0.0) & (tl.load(min_p_ptr + rows, mask=r_ok, other=0.0) <= 0.0)
    any_race = tl.max(race.to(tl.int32), 0) > 0
    inv_t = 1.0 / tl.where(race, temp, 1.0)
    z_max = tl.zeros([BLOCK_B], tl.float32)
    no_min_p = tl.full([BLOCK_B], float("-inf"), tl.float32)
    seed_tile = tl.load(seed_ptr + rows, mask=r_ok, other=0)[:, None] + tl.zeros([BLOCK_B, Q], tl.int64)
    counter_hi = tl.load(offset_ptr + rows, mask=r_ok, other=0) << 32
    row_ptr = logits_ptr + rows.to(tl.int64)[:, None] * l_s0
    lo = chunk * chunk_len  # a multiple of 4 * Q
    hi = tl.minimum(lo + chunk_len, vocab)
    j = tl.arange(0, Q)
    best = tl.full([BLOCK_B, Q], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK_B, Q], tl.int32) + lo
    s_best = tl.full([BLOCK_B, Q], float("-inf"), tl.float32)
    s_best_i = tl.zeros([BLOCK_B, Q], tl.int32)
    for v0 in range(lo, hi, 4 * Q):
        # Four independent loads in flight before any use.
        x0 = _load(row_ptr, v0 + j, hi, r_ok)
        x1 = _load(row_ptr, v0 + Q + j, hi, r_ok)
        x2 = _load(row_ptr, v0 + 2 * Q + j, hi, r_ok)
        x3 = _load(row_ptr, v0 + 3 * Q + j, hi, r_ok)
        best, best_i = _max_update(x0, v0 + j, best, best_i)
        best, best_i = _max_update(x1, v0 + Q + j, best, best_i)
        best, best_i = _max_update(x2, v0 + 2 * Q + j, best, best_i)
        best, best_i = _max_update(x3, v0 + 3 * Q + j, best, best_i)
        if any_race:
            counter = counter_hi[:, None] + (v0 // 4 + j)[None, :].to(tl.int64)
            r0, r1, r2, r3 = tl.randint4x(seed_tile, counter)
            s_best, s_best_i = _race_update(x0, v0 + j, r0, inv_t, z_max, no_min_p, s_best, s_best_i)
            s_best, s_best_i = _race_update(x1, v0 + Q + j, r1, inv_t, z_max, no_min_p, s_best,
                                            s_best_i)
            s_best, s_best_i = _race_update(x2, v0 + 2 * Q + j, r2, inv_t, z_max, no_min_p, s_best,
                                            s_best_i)
            s_best, s_best_i = _race_update(x3, v0 + 3 * Q + j, r3, inv_t, z_max, no_min_p, s_best,
                                            s_best_i)
    ws = rows * NUM_CHUNKS + chunk
    row_max, idx = _first_argmax(best, best_i, vocab)
    tl.store(ws_max_ptr + ws, row_max, mask=r_ok)
    tl.store(ws_arg_ptr + ws, idx, mask=r_ok)
    if any_race:
        s_max, s_idx = _first_argmax(s_best, s_best_i, vocab)
        tl.store(ws_score_ptr + ws, s_max, mask=r_ok)
        tl.store(ws_idx_ptr + ws, s_idx, mask=r_ok)


@triton.jit(do_not_specialize=["n_rows", "temp_ptr", "min_p_ptr", "seed_ptr", "offset_ptr"])
def _second_pass_kernel(
    logits_ptr, temp_ptr, min_p_ptr, seed_ptr, offset_ptr, ws_max_ptr, ws_score_ptr,
    ws_idx_ptr, n_rows, vocab, l_s0, chunk_len,
    NUM_CHUNKS: tl.constexpr, CHUNKS_PAD: tl.constexpr, BLOCK_B: tl.constexpr,
    Q: tl.constexpr,
):
    """Per (rows, chunk) holding a sampled row with min_p > 0: the race with the min-p
    threshold from the global max. Rewrites all its rows; for min_p <= 0 rows the result
    equals the first pass's (same random stream, no threshold)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    chunk = tl.program_id(1)
    r_ok = rows < n_rows
    temp = tl.load(temp_ptr + rows, mask=r_ok, other=0.0)
    min_p = tl.load(min_p_ptr + rows, mask=r_ok, other=0.0)
    sampling = temp > 0.0
    if tl.max((sampling & (min_p > 0.0)).to(tl.int32), 0) > 0:
        c = tl.arange(0, CHUNKS_PAD)
        m = tl.load(ws_max_ptr + rows[:, None] * NUM_CHUNKS + c[None, :],
                    mask=r_ok[:, None] & (c < NUM_CHUNKS)[None, :], other=float("-inf"))
        inv_t = 1.0 / tl.where(sampling, temp, 1.0)
        z_max = tl.max(m, 1) * inv_t
        # p_i >= min_p * p_max  <=>  z_i - z_max >= log(min_p)  (log 0 = -inf keeps all)
        log_min_p = tl.log(min_p)
        seed_tile = tl.load(seed_ptr + rows, mask=r_ok, other=0)[:, None] + tl.zeros([BLOCK_B, Q], tl.int64)
        counter_hi = tl.load(offset_ptr + rows, mask=r_ok, other=0) << 32
        row_ptr = logits_ptr + rows.to(tl.int64)[:, None] * l_s0
        lo = chunk * chunk_len
        hi = tl.minimum(lo + chunk_len, vocab)
        j = tl.arange(0, Q)
        best = tl.full([BLOCK_B, Q], float("-inf"), tl.float32)
        best_i = tl.zeros([BLOCK_B, Q], tl.int32)
        for v0 in range(lo, hi, 4 * Q):
            x0 = _load(row_ptr, v0 + j, hi, r_ok)
            x1 = _load(row_ptr, v0 + Q + j, hi, r_ok)
            x2 = _load(row_ptr, v0 + 2 * Q + j, hi, r_ok)
            x3 = _load(row_ptr, v0 + 3 * Q + j, hi, r_ok)
            counter = counter_hi[:, None] + (v0 // 4 + j)[None, :].to(tl.int64)
            r0, r1, r2, r3 = tl.randint4x(seed_tile, counter)
            best, best_i = _race_update(x0, v0 + j, r0, inv_t, z_max, log_min_p, best, best_i)
            best, best_i = _race_update(x1, v0 + Q + j, r1, inv_t, z_max, log_min_p, best, best_i)
            best, best_i = _race_update(x2, v0 + 2 * Q + j, r2, inv_t, z_max, log_min_p, best,
                                        best_i)
            best, best_i = _race_update(x3, v0 + 3 * Q + j, r3, inv_t, z_max, log_min_p, best,
                                        best_i)
        s_max, idx = _first_argmax(best, best_i, vocab)
        ws = rows * NUM_CHUNKS + chunk
        tl.store(ws_score_ptr + ws, s_max, mask=r_ok)
        tl.store(ws_idx_ptr + ws, idx, mask=r_ok)


@triton.jit(do_not_specialize=["n_rows", "temp_ptr"])
def _pick_kernel(
    ws_max_ptr, ws_arg_ptr, ws_score_ptr, ws_idx_ptr, temp_ptr, out_ptr, n_rows, vocab,
    NUM_CHUNKS: tl.constexpr, CHUNKS_PAD: tl.constexpr, BLOCK_B: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    r_ok = rows < n_rows
    c = tl.arange(0, CHUNKS_PAD)
    ws = rows[:, None] * NUM_CHUNKS + c[None, :]
    ws_ok = r_ok[:, None] & (c < NUM_CHUNKS)[None, :]
    m = tl.load(ws_max_ptr + ws, mask=ws_ok, other=float("-inf"))
    a = tl.load(ws_arg_ptr + ws, mask=ws_ok, other=0)
    x_max, greedy = _first_argmax(m, a, vocab)  # chunks are in order: first index wins
    greedy = tl.where(greedy >= vocab, 0, greedy)
    temp = tl.load(temp_ptr + rows, mask=r_ok, other=0.0)
    sampling = temp > 0.0
    token = greedy
    if tl.max(sampling.to(tl.int32), 0) > 0:
        # Greedy rows' race slots may be unwritten; their result is discarded below.
        s = tl.load(ws_score_ptr + ws, mask=ws_ok & sampling[:, None], other=float("-inf"))
        i = tl.load(ws_idx_ptr + ws, mask=ws_ok & sampling[:, None], other=0)
        s_max, drawn = _first_argmax(s, i, vocab)
        drawn = tl.where((s_max == float("-inf")) | (drawn >= vocab), greedy, drawn)
        token = tl.where(sampling, drawn, greedy)
    tl.store(out_ptr + rows, token.to(tl.int64), mask=r_ok)


def sampling_layout(batch: int, vocab: int, num_sms: int) -> tuple[int, int, int, int]:
    """(Q, chunk_len, num_chunks, BLOCK_B) from static sizes only. Q (hence the random
    stream of each token) depends on the vocab alone; chunks only on how many programs
    the batch needs to cover the SMs."""
    q = min(_MAX_Q, triton.next_power_of_2(triton.cdiv(vocab, 4)))
    tile = 4 * q
    tiles = triton.cdiv(vocab, tile)
    target = num_sms * _PROGRAMS_PER_SM
    # The chunk count is a constexpr: derive it from the batch rounded up to a power of two,
    # so a run whose batch size changes every step compiles a handful of variants, not one
    # per batch size (each compile costs the host about a second).
    bucket = triton.next_power_of_2(max(batch, 1))
    chunks = 1 if bucket >= target else min(tiles, triton.cdiv(target, bucket))
    chunk_len = triton.cdiv(tiles, chunks) * tile
    chunks = triton.cdiv(vocab, chunk_len)
    block_b = 1 if chunks > 1 or tile >= 2048 else min(triton.next_power_of_2(batch), 4096 // tile)
    return q, chunk_len, chunks, block_b


def sample_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """logits: [B, V] float32; temperature, min_p: [B] float32; seeds, offsets: [B] int64
    -> token ids [B] int64. Greedy where temperature <= 0. Deterministic in
    (seed, offset mod 2^32, logits row); no host synchronisation (CUDA-graph safe)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
    b, v = logits.shape
    for name, t, dt in (("temperature", temperature, torch.float32),
                        ("min_p", min_p, torch.float32),
                        ("seeds", seeds, torch.int64), ("offsets", offsets, torch.int64)):
        if t.shape != (b,) or t.dtype != dt:
            raise ValueError(f"{name} must be [{b}] {dt}, got {tuple(t.shape)} {t.dtype}")
    if logits.dtype != torch.float32:
        raise TypeError(f"logits must be float32, got {logits.dtype}")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    out = torch.empty(b, dtype=torch.int64, device=logits.device)
    if b == 0:
        return out
    if v == 0:
        raise ValueError("empty vocabulary")
    temperature, min_p = temperature.contiguous(), min_p.contiguous()
    q, chunk_len, chunks, block_b = sampling_layout(b, v, device_sms(logits.device))
    dev = logits.device
    ws_max = torch.empty(b * chunks, dtype=torch.float32, device=dev)
    ws_arg = torch.empty(b * chunks, dtype=torch.int32, device=dev)
    ws_score = torch.empty(b * chunks, dtype=torch.float32, device=dev)
    ws_idx = torch.empty(b * chunks, dtype=torch.int32, device=dev)
    grid = (triton.cdiv(b, block_b), chunks)
    num_warps = 8 if block_b * q >= 1024 else 4
    seeds, offsets = seeds.contiguous(), offsets.contiguous()
    _first_pass_kernel[grid](
        logits, temperature, min_p, seeds, offsets, ws_max, ws_arg, ws_score, ws_idx,
        b, v, logits.stride(0), chunk_len,
        NUM_CHUNKS=chunks, BLOCK_B=block_b, Q=q, num_warps=num_warps,
    )
    chunks_pad = triton.next_power_of_2(chunks)
    _second_pass_kernel[grid](
        logits, temperature, min_p, seeds, offsets, ws_max, ws_score, ws_idx,
        b, v, logits.stride(0), chunk_len,
        NUM_CHUNKS=chunks, CHUNKS_PAD=chunks_pad, BLOCK_B=block_b, Q=q, num_warps=num_warps,
    )
    pick_b = max(1, min(triton.next_power_of_2(b), 4096 // chunks_pad, 128))
    _pick_kernel[(triton.cdiv(b, pick_b),)](
        ws_max, ws_arg, ws_score, ws_idx, temperature, out, b, v,
        NUM_CHUNKS=chunks, CHUNKS_PAD=chunks_pad, BLOCK_B=pick_b, num_warps=4,
    )
    return out
