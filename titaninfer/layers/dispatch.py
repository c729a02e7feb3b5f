"""One decision, made in one place: run a tensor's op on Triton or on the reference."""

from __future__ import annotations

import torch

from titaninfer import env
from titaninfer.kernels import triton_available


def use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and triton_available() and not env.use_reference_kernels()
