"""Pieces every Triton kernel family shares.

The Triton interpreter (CPU) rounds float32 -> bfloat16 by truncation and computes bf16
dots wrongly; under it, kernels run their dots in float32 and `round_to` emulates the GPU's
round-to-nearest-even, so CPU tests check the rounding the GPU really does.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEFAULT_NUM_SMS = 132  # H100 SXM: what launch heuristics assume off-GPU (interpreter)


@triton.jit
def round_to(x, dtype: tl.constexpr, emulate_rne: tl.constexpr):
    """float32 -> dtype with round-to-nearest-even, also under the interpreter."""
    if emulate_rne and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(dtype)
    return x.to(dtype)


def check_paged_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, int]:
    """Validate q [T, Hq, D] against paged caches [num_blocks, block_size, Hk, D] for the
    attention kernels; returns (block_size, Hk)."""
    hq, d = q.shape[1], q.shape[2]
    nb, kv_block, hk, d_c = k_cache.shape
    if v_cache.shape != k_cache.shape or d_c != d:
        raise ValueError(f"q {tuple(q.shape)} / caches {tuple(k_cache.shape)}, "
                         f"{tuple(v_cache.shape)} disagree")
    if hq % hk:
        raise ValueError(f"{hq} query heads are not a multiple of {hk} KV heads")
    if d & (d - 1) or not 16 <= d <= 256:
        raise ValueError(f"head dim {d} must be a power of two in [16, 256]")
    if k_cache.dtype not in (torch.float16, torch.bfloat16) or v_cache.dtype != k_cache.dtype:
        raise TypeError(f"caches must be fp16/bf16, got {k_cache.dtype}/{v_cache.dtype}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("q and caches need a contiguous last dim")
    return kv_block, hk


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def device_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (DEFAULT_NUM_SMS off a GPU), for grid sizing."""
    if device.type != "cuda":
        return DEFAULT_NUM_SMS
    return _num_sms(device.index if device.index is not None else torch.cuda.current_device())
