"""Embedding gather + the step's sums-of-squares accumulators in one kernel:
`embedding_and_sumsq(ids, table, n_rows) -> (x, sums)`.

x[t] = table[ids[t]]; sums [n_rows, T, sumsq_width()] float64 is zeroed except
sums[n_rows - 1, t, 0] = sum(x[t]^2), the embeddings' own sums of squares, in
`skinny_gemm.new_sumsq`'s layout (partial sums in slots per row, zeros between them; a
consumer adds them up).
The other rows are the accumulators of the forward's residual epilogues
(`layers.linear.sumsq_slots`). One program per token; it also zeroes its token's column of
every accumulator row, so there is no memset before it.

Under PDL the ids (a step input: copied in before the step's first kernel) and the
embedding row (weights) load before the wait; the stores come after it, when the kernels
that read the previous step's accumulators are done.

Bytes: T rows of the table, read once and written once; the sums are noise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels import skinny_gemm
from titaninfer.kernels.triton_common import (
    await_producer,
    pdl_launch_kwargs,
    pdl_mode,
    sum_squares,
)


@triton.jit
def _embedding_sumsq_kernel(ids_ptr, table_ptr, out_ptr, sums_ptr, T, H, table_s0, n_rows,
                            BLOCK_H: tl.constexpr, ROWS_PAD: tl.constexpr, WIDTH: tl.constexpr,
                            PDL: tl.constexpr):
    t = tl.program_id(0)
    tok = tl.load(ids_ptr + t).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    ok = h < H
    row = tl.load(table_ptr + tok * table_s0 + h, mask=ok, other=0.0)
    await_producer(PDL)
    tl.store(out_ptr + t.to(tl.int64) * H + h, row, mask=ok)
    sq = sum_squares(row.to(tl.float32)[None, :])  # [1] float64
    r = tl.arange(0, ROWS_PAD)[:, None]
    s = tl.arange(0, WIDTH)[None, :]
    vals = tl.where((r == n_rows - 1) & (s == 0), sq[:, None], 0.0)
    tl.store(sums_ptr + (r * T + t) * WIDTH + s, vals, mask=r < n_rows)


def embedding_and_sumsq(ids: torch.Tensor, table: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [T] int -> (table[ids] [T, H], sums [n_rows, T, sumsq_width()] float64: zeros but
    for the last row's first slot, each token's sum of squares). ids must be in range."""
    if ids.dim() != 1 or table.dim() != 2 or table.stride(1) != 1 or n_rows < 1:
        raise ValueError(f"embedding_and_sumsq: ids {tuple(ids.shape)} must be [T], table "
                         f"{tuple(table.shape)} [V, H] with contiguous rows, n_rows {n_rows} >= 1")
    t, h = ids.shape[0], table.shape[1]
    out = torch.empty((t, h), dtype=table.dtype, device=table.device)
    width = skinny_gemm.sumsq_width()  # slots (and the zeros between them, if spaced)
    sums = torch.empty((n_rows, t, width), dtype=torch.float64, device=table.device)
    if t == 0:
        return out, sums
    pdl = pdl_mode(table.device)
    _embedding_sumsq_kernel[(t,)](
        ids, table, out, sums, t, h, table.stride(0), n_rows,
        BLOCK_H=triton.next_power_of_2(h), ROWS_PAD=triton.next_power_of_2(n_rows), WIDTH=width,
        PDL=pdl, num_warps=4, **pdl_launch_kwargs(pdl),
    )
    return out, sums
