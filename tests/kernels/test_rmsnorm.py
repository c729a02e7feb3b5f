"""rms_norm vs rms_norm_ref: odd shapes, strided per-head views, residual fusion, dtypes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.reference import rms_norm_ref  # noqa: E402
from titaninfer.kernels.rmsnorm import rms_norm  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _check(x: torch.Tensor, w: torch.Tensor, res: torch.Tensor | None, eps: float = 1e-6) -> None:
    out, new_res = rms_norm(x, w, eps, res)
    ref_out, ref_res = rms_norm_ref(x, w, eps, res)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not out.isnan().any(), "unwritten output element"
    # Same roundings, another fp32 summation order: a flipped rounding of the normalised
    # value, scaled by the weight, then rounded again, stays within two ulps.
    ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float32: 1e-6}[x.dtype]
    torch.testing.assert_close(out, ref_out, rtol=2 * ulp, atol=ulp)
    if x.dtype != torch.float32:  # fp32 has no output rounding to hide summation order
        differ = int((out != ref_out).sum())
        assert differ <= max(2, out.numel() // 1000), f"{differ} elements differ from the reference"
    if res is None:
        assert new_res is None
    else:
        assert new_res is not None and not new_res.isnan().any()
        torch.testing.assert_close(new_res, ref_res, rtol=0, atol=0)  # x + r: one exact rounding


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 64), (7, 100), (3, 4096), (2, 3, 5, 48)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rmsnorm_matches_reference(shape, dtype, with_residual, device, poison_empty):
    x = torch.randn(shape, device=device).to(dtype) * 3
    w = torch.randn(shape[-1], device=device)
    res = torch.randn(shape, device=device).to(dtype) if with_residual else None
    _check(x, w, res)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_per_head_on_strided_qkv_view(dtype, device, poison_empty):
    """q/k norm runs on [T, heads, D] views into a fused qkv output: read through strides."""
    t, hq, hk, d = 9, 4, 2, 64
    qkv = torch.randn(t, (hq + 2 * hk) * d, device=device).to(dtype)
    q = qkv[:, : hq * d].view(t, hq, d)
    k = qkv[:, hq * d: (hq + hk) * d].view(t, hk, d)
    before = qkv.clone()
    for view in (q, k):
        _check(view, torch.randn(d, device=device), None)
    assert torch.equal(qkv, before), "rms_norm must not write its input"


def test_rmsnorm_bf16_weight_and_eps(device):
    x = torch.randn(5, 96, device=device).to(torch.bfloat16)
    _check(x, torch.randn(96, device=device).to(torch.bfloat16), None, eps=1e-2)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [2048, 4096, 5120, 8192])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_gpu_large(hidden, dtype, poison_empty):
    x = torch.randn(4099, hidden, device="cuda").to(dtype)
    _check(x, torch.randn(hidden, device="cuda"), torch.randn_like(x))
    qkv = torch.randn(4099, 48 * 128, device="cuda").to(dtype)
    _check(qkv[:, : 32 * 128].view(4099, 32, 128), torch.randn(128, device="cuda"), None)
