"""Projections: cuBLAS for wide batches, the skinny (GEMV) Triton kernel for narrow ones.

A decode step of a few sequences reads every weight once for a handful of rows; there the
skinny kernel streams the weights closer to the bandwidth limit and takes the RMSNorm or
SiLU-and-multiply that precedes a projection into the same pass (see kernels/skinny_gemm.py).
`skinny_rows_ok` is the one switch; the fused helpers fall back to the separate ops.
The qkv projection can also take the rotary and the KV-cache store after it
(`norm_linear_rope`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from titaninfer import env
from titaninfer.layers.activation import silu_and_mul
from titaninfer.layers.dispatch import use_triton
from titaninfer.layers.norm import RMSNorm

if TYPE_CHECKING:
    from titaninfer.kernels.skinny_gemm import RopeKVStore


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


def norm_linear(x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm,
                layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer(norm(x + residual)), x + residual); without a residual the stream starts at x."""
    out, new_residual, _ = norm_linear_rope(x, residual, norm, layer, None)
    return out, new_residual


def norm_linear_rope(x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm, layer: nn.Linear,
                     rope: RopeKVStore | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """norm_linear, plus (third value True) the rotary and KV store of `rope` in the same
    kernel where the skinny path runs and its tiles allow: q and k of the output are then
    rotated and the cache holds this step's k and v. False: the caller still has to."""
    if skinny_rows_ok(x):
        from titaninfer.kernels.skinny_gemm import rope_epilogue_fits

        n, k = layer.weight.shape
        if rope is not None and not rope_epilogue_fits(x.shape[0], n, k, rope.k_cache.shape[-1]):
            rope = None
        out, new_residual = _skinny_norm_linear(x, residual, norm, layer, rope=rope)
        return out, new_residual, rope is not None
    h, summed = norm(x, residual)
    return F.linear(h, layer.weight, layer.bias), (x if summed is None else summed), False


def norm_linear_silu_mul(x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm,
                         layer: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(silu_and_mul(layer(norm(x + residual))), x + residual) for a [gate | up] layer: the
    activations [T, I] the down projection takes. On the skinny path the SiLU-and-mul is
    the GEMV's epilogue (and the norm its prologue where that pays); elsewhere its own op."""
    if skinny_rows_ok(x):
        return _skinny_norm_linear(x, residual, norm, layer, silu_mul=True)
    gate_up, new_residual = norm_linear(x, residual, norm, layer)
    return silu_and_mul(gate_up), new_residual


def _skinny_norm_linear(x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm, layer: nn.Linear,
                        rope: RopeKVStore | None = None, silu_mul: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The skinny path of the helpers above: the norm as the GEMV's prologue where that pays
    (`rmsnorm_prologue_pays`), else the norm kernel first; `rope` / `silu_mul` epilogues as
    `skinny_linear` takes them."""
    from titaninfer.kernels.skinny_gemm import (
        rmsnorm_prologue_pays,
        skinny_linear,
        skinny_rmsnorm_linear,
    )

    n, k = layer.weight.shape
    if rmsnorm_prologue_pays(x.shape[0], n, k):
        return skinny_rmsnorm_linear(x, residual, norm.weight, norm.eps, layer.weight, layer.bias,
                                     rope=rope, silu_mul=silu_mul)
    h, summed = norm(x, residual)
    out = skinny_linear(h, layer.weight, layer.bias, rope=rope, silu_mul=silu_mul)
    return out, (x if summed is None else summed)


def silu_mul_linear(gate_up: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """layer(silu(gate) * up) for gate_up = [gate | up]."""
    if skinny_rows_ok(gate_up):
        from titaninfer.kernels.skinny_gemm import skinny_silu_mul_linear

        return skinny_silu_mul_linear(gate_up, layer.weight, layer.bias)
    return F.linear(silu_and_mul(gate_up), layer.weight, layer.bias)
