"""SiLU-and-multiply: the gated MLP's activation on the fused gate/up projection."""

from __future__ import annotations

import torch

from titaninfer.kernels.reference import silu_and_mul_ref
from titaninfer.layers.dispatch import use_triton


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if use_triton(x):
        from titaninfer.kernels.activation import silu_and_mul as silu_and_mul_triton

        return silu_and_mul_triton(x)
    return silu_and_mul_ref(x)
