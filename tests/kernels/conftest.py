"""Kernel tests: each Triton kernel against its reference in `titaninfer.kernels.reference`.

Without a CUDA device the kernels run on CPU tensors through Triton's interpreter, which
must be switched on before any kernel is decorated: this module sets TRITON_INTERPRET=1
at import time (pytest imports it before collecting the test modules here) and reloads
kernel modules that an earlier import decorated without it. Test modules start with
`pytest.importorskip("triton")`, so without Triton they are skipped with that reason.
Cases marked `gpu` (large shapes) run only where CUDA is present.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
    for _name in ("triton_common", "rmsnorm", "activation", "rotary", "decode_attention", "prefill_attention", "skinny_gemm",
                  "sampling", "argmax"):
        _mod = sys.modules.get(f"titaninfer.kernels.{_name}")
        if _mod is not None and not getattr(_mod, "_INTERPRET", getattr(_mod, "INTERPRET", True)):
            importlib.reload(_mod)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def device() -> str:
    """Where kernel inputs live: CUDA when present, else CPU (interpreter)."""
    return DEVICE


@pytest.fixture
def poison_empty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make torch.empty / torch.empty_like return poisoned tensors (NaN for floats, a
    sentinel for ints) so a test can check that a kernel writes every output element."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def _poison(t: torch.Tensor) -> torch.Tensor:
        if t.dtype.is_floating_point:
            return t.fill_(float("nan"))
        if t.dtype != torch.bool:
            return t.fill_(-7777)
        return t

    def empty(*args, **kwargs):  # type: ignore[no-untyped-def]
        return _poison(real_empty(*args, **kwargs))

    def empty_like(*args, **kwargs):  # type: ignore[no-untyped-def]
        return _poison(real_empty_like(*args, **kwargs))

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)
    yield


PagedKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _make_paged_kv(
    seq_lens: list[int], num_kv_heads: int, head_dim: int, block_size: int,
    dtype: torch.dtype, device: str, extra_blocks: int = 3, seed: int | None = None,
) -> PagedKV:
    """Random paged K/V caches and block tables for contexts of `seq_lens` tokens.

    Blocks are assigned in a random order; every slot that no context owns (the tail of a
    last block, spare blocks) holds NaN, and padded block-table entries point at an all-NaN
    block, so a kernel that reads past a context or past its table poisons its output."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    need = [(n + block_size - 1) // block_size for n in seq_lens]
    max_blocks = max(need + [1]) + 1
    num_blocks = sum(need) + extra_blocks + 1
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    perm = torch.randperm(num_blocks, generator=gen)
    nan_block = int(perm[-1])
    tables = torch.full((len(seq_lens), max_blocks), nan_block, dtype=torch.int32)
    pos = 0
    for i, (n, nb) in enumerate(zip(seq_lens, need, strict=True)):
        ids = perm[pos:pos + nb]
        pos += nb
        tables[i, :nb] = ids.int()
        for j, blk in enumerate(ids.tolist()):
            used = min(block_size, n - j * block_size)
            k_cache[blk, :used] = torch.randn(used, num_kv_heads, head_dim, generator=gen).to(dtype)
            v_cache[blk, :used] = torch.randn(used, num_kv_heads, head_dim, generator=gen).to(dtype)
    return k_cache.to(device), v_cache.to(device), tables.to(device)


@pytest.fixture
def make_paged_kv() -> Callable[..., PagedKV]:
    """Factory: make_paged_kv(seq_lens, num_kv_heads, head_dim, block_size, dtype, device)."""
    return _make_paged_kv


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """assert_close tolerances for a result rounded once or twice to `dtype`."""
    return {
        torch.float32: {"rtol": 1e-5, "atol": 1e-5},
        torch.float16: {"rtol": 2e-3, "atol": 2e-3},
        torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2},
    }[dtype]


@pytest.fixture(scope="session")
def tol() -> Callable[[torch.dtype], dict[str, float]]:
    return tolerance
