"""Compute kernels. `reference` holds the plain-PyTorch definition of every kernel family;
the Triton implementations live one family per file beside it and are imported only
where Triton and a CUDA device are present (see `triton_available`)."""

from __future__ import annotations

import functools


@functools.cache
def triton_available() -> bool:
    """True when Triton kernels can run: Triton importable and a CUDA device present."""
    try:
        import torch
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()
