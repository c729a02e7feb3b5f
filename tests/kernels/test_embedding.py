"""embedding_and_sumsq vs torch: the gathered rows, the zeroed accumulators and the
embeddings' float64 sums of squares; and the LM head's float32 logits from the GEMV."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.embedding import embedding_and_sumsq  # noqa: E402
from titaninfer.kernels.skinny_gemm import skinny_linear, sumsq_width  # noqa: E402


@pytest.mark.parametrize("t,h,n_rows", [(1, 64, 1), (3, 100, 5), (16, 96, 45)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_embedding_and_sumsq_matches_torch(device, t, h, n_rows, dtype):
    table = torch.randn(50, h, device=device).to(dtype)
    ids = torch.randint(0, 50, (t,), device=device)
    x, sums = embedding_and_sumsq(ids, table, n_rows)
    assert torch.equal(x, table[ids])
    want = torch.zeros(n_rows, t, sumsq_width(), dtype=torch.float64, device=device)
    want[n_rows - 1, :, 0] = (table[ids].double() ** 2).sum(-1)  # squares of 16-bit values: exact
    torch.testing.assert_close(sums, want, rtol=1e-12, atol=0)


def test_embedding_and_sumsq_rejects_bad_shapes(device):
    table = torch.randn(10, 8, device=device)
    with pytest.raises(ValueError):
        embedding_and_sumsq(torch.zeros(2, 2, dtype=torch.long, device=device), table, 1)
    with pytest.raises(ValueError):
        embedding_and_sumsq(torch.zeros(2, dtype=torch.long, device=device), table, 0)


@pytest.mark.parametrize("m", [1, 3])
def test_float32_logits_are_the_rounded_projection(device, m):
    """out_dtype float32: exactly F.linear's bf16 output (same kernel) cast to float32."""
    x = torch.randn(m, 192, device=device).to(torch.bfloat16)
    w = torch.randn(300, 192, device=device).to(torch.bfloat16)
    logits = skinny_linear(x, w, out_dtype=torch.float32)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, skinny_linear(x, w).float())
    with pytest.raises(ValueError):
        skinny_linear(x, w, out_dtype=torch.float16)
