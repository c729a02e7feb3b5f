"""RMSNorm with the residual add fused in: one read of x (and residual), one write of each
output. Semantics are those of `reference.rms_norm_ref`, rounding order included:

    s      = round(x + residual)                 (only with a residual; returned as new residual)
    normed = round(s * rsqrt(mean(s^2) + eps))   (round = to x's dtype, as Hugging Face does;
                                                  the sum of squares in float64)
    out    = round(normed * weight)

All arithmetic is float32. Normalises over the last dim; any leading shape, so it serves
both [T, H] hidden states and the per-head q/k norm on [T, heads, D] views of a fused qkv
output (up to two leading dims are read through their strides, no copy).

Tiling: a program owns BLOCK_M rows x the whole row (BLOCK_N >= H), so x is read once and
the reduction never leaves registers. Short rows (per-head norm, D = 128) pack many rows
per program so each program still moves a few KiB.
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
    rms_rstd,
    round_to,
    sum_squares,
)

_MAX_TILE = 4096  # elements per program for short rows (rows are packed up to this)




# n_rows and n_inner change with every step's token count: not specialised on (Triton
# would otherwise compile a variant for ==1 and for multiples of 16).
@triton.jit(do_not_specialize=["n_rows", "n_inner", "x_s0", "x_s1", "r_s0", "r_s1"])
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, new_res_ptr,
    n_rows, n_cols, n_inner,
    x_s0, x_s1, r_s0, r_s1,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    EMULATE_RNE: tl.constexpr, PDL: tl.constexpr,
):
    # Row r of the flattened leading dims sits at (r // n_inner) * s0 + (r % n_inner) * s1.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    outer = rows // n_inner
    inner = rows % n_inner
    dtype = out_ptr.dtype.element_ty

    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)  # never written by a step
    await_producer(PDL)
    x_off = outer * x_s0 + inner * x_s1
    x = tl.load(x_ptr + x_off[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out_off = rows[:, None] * n_cols + cols[None, :]  # outputs are contiguous
    if HAS_RESIDUAL:
        r_off = outer * r_s0 + inner * r_s1
        r = tl.load(res_ptr + r_off[:, None] + cols[None, :], mask=mask, other=0.0)
        s = round_to(x + r.to(tl.float32), dtype, EMULATE_RNE)
        tl.store(new_res_ptr + out_off, s, mask=mask)
        x = s.to(tl.float32)

    rstd = rms_rstd(sum_squares(x), n_cols, eps)  # padded columns are 0: they add nothing
    normed = round_to(x * rstd[:, None], dtype, EMULATE_RNE).to(tl.float32)
    tl.store(out_ptr + out_off, round_to(normed * w[None, :], dtype, EMULATE_RNE), mask=mask)


def _row_layout(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """(tensor, n_inner, s0, s1) so row r starts at (r // n_inner) * s0 + (r % n_inner) * s1.

    t has at most two leading dims (callers flatten deeper ones); they are read through their
    strides, because q/k views of a fused qkv output cannot be flattened without a copy."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    if t.dim() == 1:
        return t, 1, 0, 0
    if t.dim() == 2:
        return t, 1, t.stride(0), 0
    return t, t.shape[1], t.stride(0), t.stride(1)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x: [..., N] -> (out [..., N], new_residual [..., N] or None), both contiguous, x's dtype.

    With `residual`, normalises x + residual and also returns that sum (rounded to x's
    dtype); without, returns (rmsnorm(x), None). Neither input is modified.
    """
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"rms_norm: unsupported dtype {x.dtype}")
    n = x.shape[-1]
    if weight.shape != (n,):
        raise ValueError(f"rms_norm: weight {tuple(weight.shape)} does not match last dim {n}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"rms_norm: residual {tuple(residual.shape)} != x {tuple(x.shape)}")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    new_res = torch.empty_like(out) if residual is not None else None
    n_rows = x.numel() // max(n, 1)
    if n_rows == 0 or n == 0:
        return out, new_res

    if x.dim() > 3:
        x = x.reshape(-1, n)
        residual = residual.reshape(-1, n) if residual is not None else None
    xv, n_inner, x_s0, x_s1 = _row_layout(x)
    rv, r_s0, r_s1 = xv, 0, 0  # unused without a residual
    if residual is not None:
        rv, _, r_s0, r_s1 = _row_layout(residual)  # same shape as x, so same n_inner

    block_n = triton.next_power_of_2(n)
    # From the row length alone (not the row count), so one compiled variant serves every
    # batch; masked rows cost nothing where the kernel is launch-bound anyway.
    block_m = max(1, _MAX_TILE // block_n)
    tile = block_m * block_n
    num_warps = min(max(tile // 512, 1), 16)
    grid = (triton.cdiv(n_rows, block_m),)
    pdl = pdl_mode(x.device)
    _rms_norm_kernel[grid](
        xv, rv, weight.contiguous(), out, new_res if new_res is not None else out,
        n_rows, n, n_inner, x_s0, x_s1, r_s0, r_s1, float(eps),
        HAS_RESIDUAL=residual is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        EMULATE_RNE=_INTERPRET, PDL=pdl, num_warps=num_warps, **pdl_launch_kwargs(pdl),
    )
    return out, new_res
