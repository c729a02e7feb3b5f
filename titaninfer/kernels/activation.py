"""SiLU-and-multiply for the gated MLP: out = silu(gate) * up, where the fused gate/up
projection gives x = [gate | up] along the last dim. Semantics: `reference.silu_and_mul_ref`
(float32 math, one rounding to x's dtype at the end).

Bytes: read 2*d, write d elements per row; nothing to reuse, so the kernel is a pure
stream. A program owns one row x BLOCK columns; rows go on grid axis 0 (up to 2^31 of
them), column blocks on axis 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from titaninfer.kernels.triton_common import INTERPRET as _INTERPRET
from titaninfer.kernels.triton_common import round_to


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, d, x_row_stride, out_row_stride,
    BLOCK: tl.constexpr, EMULATE_RNE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    x_row = x_ptr + row * x_row_stride
    gate = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_row + d + cols, mask=mask, other=0.0).to(tl.float32)
    # silu(g) = g * sigmoid(g); exp overflow for very negative g gives g / inf = -0, fine.
    y = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * out_row_stride + cols,
             round_to(y, out_ptr.dtype.element_ty, EMULATE_RNE), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2*d] (gate then up) -> out [..., d], contiguous, x's dtype."""
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"silu_and_mul: unsupported dtype {x.dtype}")
    if x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul: last dim {x.shape[-1]} is odd")
    d = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], d), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    x2 = x.reshape(-1, 2 * d)  # a view for the usual contiguous matmul output
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    # 2048 columns x 8 warps: 8 elements (16 bytes of bf16) per thread per operand.
    block = min(2048, triton.next_power_of_2(d))
    num_warps = min(max(block // 256, 1), 8)
    grid = (rows, triton.cdiv(d, block))
    _silu_and_mul_kernel[grid](
        x2, out, d, x2.stride(0), d, BLOCK=block, EMULATE_RNE=_INTERPRET, num_warps=num_warps,
    )
    return out
