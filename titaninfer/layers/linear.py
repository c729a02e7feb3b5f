"""Projections: cuBLAS for wide batches, the skinny (GEMV) Triton kernel for narrow ones.

A decode step of a few sequences reads every weight once for a handful of rows; there the
skinny kernel streams the weights closer to the bandwidth limit and takes the RMSNorm
that precedes a projection into the same pass where that pays, and what follows it: the
rotary and KV-cache store after qkv (`norm_linear_rope`), the SiLU-and-multiply after
gate_up (`norm_linear_silu_mul`), the residual add after o and down (`linear_residual`);
see kernels/skinny_gemm.py. `skinny_rows_ok` is the one switch; the fused helpers fall
back to the separate ops.

The residual stream between sublayers is a `Stream`: a branch output and the residual it
is still to be added to (the next norm adds it), or, after `linear_residual` on the
skinny path, the sum itself with its rows' sums of squares, so the next norm is only the
next projection's prologue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from titaninfer import env
from titaninfer.layers.activation import silu_and_mul
from titaninfer.layers.dispatch import use_triton
from titaninfer.layers.norm import RMSNorm

if TYPE_CHECKING:
    from titaninfer.kernels.skinny_gemm import RopeKVStore


class Stream(NamedTuple):
    """The residual stream, x + residual (residual None: x alone, e.g. the embeddings).

    sumsq, when set (residual then None): the sums of the squares of each row of x
    (`skinny_gemm.new_sumsq`), from the projection that produced x (`linear_residual`); a
    norm of x may use them."""

    x: torch.Tensor
    residual: torch.Tensor | None = None
    sumsq: torch.Tensor | None = None


def skinny_rows_ok(x: torch.Tensor) -> bool:
    """True when x's projections should run on the skinny kernel."""
    # Cheapest test first: this runs for every projection of every eager step.
    if not 0 < x.shape[0] <= 16 or x.dtype not in (torch.float16, torch.bfloat16):
        return False
    return x.shape[0] <= env.skinny_gemm_max_rows() and use_triton(x)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    if skinny_rows_ok(x):
        from titaninfer.kernels.skinny_gemm import skinny_linear

        return skinny_linear(x, layer.weight, layer.bias)
    return F.linear(x, layer.weight, layer.bias)


def linear_float32(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`linear(x, layer).float()`: the output rounded to x's dtype, as float32 (logits). On
    the skinny path one kernel stores it so, without a separate cast kernel."""
    if skinny_rows_ok(x):
        from titaninfer.kernels.skinny_gemm import skinny_linear

        return skinny_linear(x, layer.weight, layer.bias, out_dtype=torch.float32)
    return F.linear(x, layer.weight, layer.bias).float()


def sumsq_slots(x: torch.Tensor, n: int) -> torch.Tensor | None:
    """Zeroed accumulators for the `linear_residual` calls of one forward over tokens x, n
    of them (index the first dim); None off the skinny path, where nothing would use them.
    One allocation per forward: zeroing them one by one would put a memset between the
    kernels of the step."""
    if not skinny_rows_ok(x):
        return None
    from titaninfer.kernels.skinny_gemm import new_sumsq

    return new_sumsq(x.shape[0], x.device, (n,))


def linear_residual(x: torch.Tensor, layer: nn.Linear, residual: torch.Tensor,
                    sumsq_out: torch.Tensor | None = None) -> Stream:
    """The stream residual + layer(x). With `sumsq_out` (a zeroed row of `sumsq_slots`) on
    the skinny path the GEMV adds the residual itself and sums the squares of the result
    for the next norm (`skinny_linear_residual`); otherwise the add is left to that norm."""
    if sumsq_out is not None and skinny_rows_ok(x) and residual.is_contiguous():
        from titaninfer.kernels.skinny_gemm import skinny_linear_residual

        return Stream(skinny_linear_residual(x, layer.weight, residual, sumsq_out, layer.bias), None, sumsq_out)
    return Stream(linear(x, layer), residual)


def norm_linear(stream: Stream, norm: RMSNorm, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer(norm(stream)), the stream summed into one tensor)."""
    out, summed, _ = norm_linear_rope(stream, norm, layer, None)
    return out, summed


def norm_linear_rope(stream: Stream, norm: RMSNorm, layer: nn.Linear,
                     rope: RopeKVStore | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """norm_linear, plus (third value True) the rotary and KV store of `rope` in the same
    kernel where the skinny path runs and its tiles allow: q and k of the output are then
    rotated and the cache holds this step's k and v. False: the caller still has to."""
    x = stream.x
    if skinny_rows_ok(x):
        from titaninfer.kernels.skinny_gemm import rope_epilogue_fits

        n, k = layer.weight.shape
        if rope is not None and not rope_epilogue_fits(x.shape[0], n, k, rope.k_cache.shape[-1]):
            rope = None
        out, summed = _skinny_norm_linear(stream, norm, layer, rope=rope)
        return out, summed, rope is not None
    h, summed = norm(x, stream.residual)
    return F.linear(h, layer.weight, layer.bias), (x if summed is None else summed), False


def norm_linear_silu_mul(stream: Stream, norm: RMSNorm, layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(silu_and_mul(layer(norm(stream))), the stream summed) for a [gate | up] layer: the
    activations [T, I] the down projection takes. On the skinny path the SiLU-and-mul is
    the GEMV's epilogue (and the norm its prologue where that pays); elsewhere its own op."""
    if skinny_rows_ok(stream.x):
        return _skinny_norm_linear(stream, norm, layer, silu_mul=True)
    gate_up, summed = norm_linear(stream, norm, layer)
    return silu_and_mul(gate_up), summed


def _skinny_norm_linear(stream: Stream, norm: RMSNorm, layer: nn.Linear,
                        rope: RopeKVStore | None = None, silu_mul: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The skinny path of the helpers above: the norm as the GEMV's prologue where that pays,
    with the stream's sums of squares (`presummed_prologue_pays`) or recomputing them
    (`rmsnorm_prologue_pays`); else the norm kernel first. `rope` / `silu_mul` epilogues as
    `skinny_linear` takes them."""
    from titaninfer.kernels.skinny_gemm import (
        presummed_prologue_pays,
        rmsnorm_prologue_pays,
        skinny_linear,
        skinny_rmsnorm_linear,
    )

    x, residual = stream.x, stream.residual
    m, (n, k) = x.shape[0], layer.weight.shape
    if stream.sumsq is not None and presummed_prologue_pays(m, n, k):
        return skinny_rmsnorm_linear(x, None, norm.weight, norm.eps, layer.weight, layer.bias,
                                     rope=rope, silu_mul=silu_mul, sumsq=stream.sumsq)
    if rmsnorm_prologue_pays(m, n, k):
        return skinny_rmsnorm_linear(x, residual, norm.weight, norm.eps, layer.weight, layer.bias,
                                     rope=rope, silu_mul=silu_mul)
    h, summed = norm(x, residual)
    out = skinny_linear(h, layer.weight, layer.bias, rope=rope, silu_mul=silu_mul)
    return out, (x if summed is None else summed)
