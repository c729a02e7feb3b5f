"""silu_and_mul vs silu_and_mul_ref on odd shapes and all float dtypes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.activation import silu_and_mul  # noqa: E402
from titaninfer.kernels.reference import silu_and_mul_ref  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ULP = {torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float32: 1e-6}


def _check(x: torch.Tensor) -> None:
    out = silu_and_mul(x)
    ref = silu_and_mul_ref(x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert not out.isnan().any(), "unwritten output element"
    torch.testing.assert_close(out, ref, rtol=ULP[x.dtype], atol=ULP[x.dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 2 * 64), (7, 2 * 1000), (3, 5, 2 * 96), (2, 2 * 3000)])
def test_silu_and_mul_matches_reference(shape, dtype, device, poison_empty):
    _check((torch.randn(shape, device=device) * 4).to(dtype))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # interpreter
def test_silu_and_mul_extremes(device):
    x = torch.tensor([[-100.0, -5.0, 0.0, 80.0, 1.0, 2.0, 3.0, -1.0]], device=device)
    _check(x)
    _check(x.to(torch.bfloat16))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_silu_and_mul_gpu_large(dtype, poison_empty):
    _check(torch.randn(4099, 2 * 14336, device="cuda").to(dtype))
    _check(torch.randn(3, 2 * 11008, device="cuda").to(dtype))
