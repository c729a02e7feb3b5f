"""Greedy sampling's argmax over the vocabulary in one kernel: `greedy_argmax(logits)`.

torch's argmax reduces a row in one thread block: 27.5 us for Llama-3-8B's 128,256 logits
at batch 1 on an H200 (`titaninfer profile`), ~0.7% of its decode step. Here a program
owns (row, chunk of CHUNK logits): it writes its chunk's max and the first index holding
it, takes a ticket from the row's counter (`triton_common.last_to_arrive`, as the decode
attention's merge) and the row's last program picks, among the chunk maxima,
the largest value and for equal values the smallest index: the first index of the row's
maximum, what `torch.argmax` returns, and zeroes the counter. Logits must be NaN-free.

Bytes: the logits, once (4 * rows * V).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import last_to_arrive, zeroed_counters

CHUNK = 4096  # logits per program: 32 programs per row of a 128K vocabulary


@triton.jit(do_not_specialize=["n_rows"])
def _argmax_kernel(logits_ptr, row_stride, vocab, n_rows, part_val_ptr, part_idx_ptr, ticket_ptr, out_ptr,
                   NUM_CHUNKS: tl.constexpr, CHUNKS_PAD: tl.constexpr, CHUNK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    offs = chunk * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(logits_ptr + row * row_stride + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
    slot = row * NUM_CHUNKS + chunk
    tl.store(part_val_ptr + slot, tl.max(x, 0))
    tl.store(part_idx_ptr + slot, chunk * CHUNK + tl.argmax(x, 0, tie_break_left=True))
    if last_to_arrive(ticket_ptr + row, NUM_CHUNKS):
        k = tl.arange(0, CHUNKS_PAD)
        ok = k < NUM_CHUNKS
        vals = tl.load(part_val_ptr + row * NUM_CHUNKS + k, mask=ok, other=float("-inf"), cache_modifier=".cg")
        idxs = tl.load(part_idx_ptr + row * NUM_CHUNKS + k, mask=ok, other=0, cache_modifier=".cg")
        best = tl.max(vals, 0)
        first = tl.min(tl.where(ok & (vals == best), idxs, vocab), 0)
        tl.store(out_ptr + row, first.to(tl.int64))
        tl.store(ticket_ptr + row, 0)  # zero again for the next call


def greedy_argmax(logits: torch.Tensor, chunk: int = CHUNK, out: torch.Tensor | None = None) -> torch.Tensor:
    """logits [rows, V] (float, NaN-free, last dim contiguous) -> int64 [rows]: the first
    index of each row's maximum, as `logits.argmax(-1)` (written into `out` when given:
    a contiguous int64 [rows], e.g. a CUDA graph's static buffer)."""
    if logits.dim() != 2 or logits.stride(-1) != 1:
        raise ValueError(f"greedy_argmax: logits must be 2-D with a contiguous last dim, got {tuple(logits.shape)}")
    if chunk & (chunk - 1):
        raise ValueError(f"greedy_argmax: chunk {chunk} is not a power of two")
    rows, vocab = logits.shape
    if out is None:
        out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    elif out.shape != (rows,) or out.dtype != torch.int64 or not out.is_contiguous():
        raise ValueError(f"greedy_argmax: out must be a contiguous int64 [{rows}], got {tuple(out.shape)} {out.dtype}")
    if rows == 0 or vocab == 0:
        return out.zero_()
    num_chunks = triton.cdiv(vocab, chunk)
    part_val = torch.empty(rows * num_chunks, dtype=torch.float32, device=logits.device)
    part_idx = torch.empty(rows * num_chunks, dtype=torch.int32, device=logits.device)
    tickets = zeroed_counters(logits.device, rows, "argmax")
    _argmax_kernel[(rows, num_chunks)](
        logits, logits.stride(0), vocab, rows, part_val, part_idx, tickets, out,
        NUM_CHUNKS=num_chunks, CHUNKS_PAD=triton.next_power_of_2(num_chunks), CHUNK=chunk, num_warps=4,
    )
    return out
