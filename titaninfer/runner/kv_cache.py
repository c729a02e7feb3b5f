"""The KV cache tensors: one K and one V tensor per layer, [num_blocks, block_size, Hk, D].

All layers live in one allocation so the cache is a single, contiguous reservation.
"""

from __future__ import annotations

import torch

from titaninfer.config import ModelConfig

CPU_DEFAULT_KV_BYTES = 1 << 30


def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_layers * block_size * cfg.kv_size * elem


def num_blocks_for_bytes(cfg: ModelConfig, block_size: int, dtype: torch.dtype, kv_bytes: int) -> int:
    n = kv_bytes // bytes_per_block(cfg, block_size, dtype)
    if n < 1:
        raise ValueError(f"a KV budget of {kv_bytes} bytes holds no block of {block_size} tokens "
                         f"({bytes_per_block(cfg, block_size, dtype)} bytes each)")
    return int(n)


def allocate_kv_cache(cfg: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                      device: str | torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # Zeroed so that slots no request wrote yet (padding rows of a CUDA graph read them)
    # hold finite values.
    full = torch.zeros((cfg.num_layers, 2, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim),
                       dtype=dtype, device=device)
    return [(full[i, 0], full[i, 1]) for i in range(cfg.num_layers)]
