"""persistent_mlp against the skinny three-kernel chain it replaces (bit for bit) and a
plain float64 MLP (within bf16 rounding). On a CPU the interpreter runs its two phases as
two launches of a few programs, each walking several tiles; on a GPU one launch with the
grid barrier, at model shapes too."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.persistent_mlp import persistent_mlp  # noqa: E402
from titaninfer.kernels.reference import rms_norm_ref, silu_and_mul_ref  # noqa: E402
from titaninfer.kernels.skinny_gemm import (  # noqa: E402
    new_sumsq,
    skinny_linear,
    skinny_linear_residual,
    sumsq_total,
)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
EPS = 1e-6


def _inputs(h: int, i: int, device: str, seed: int):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16
    x = (torch.randn(1, h, generator=g) * 3).to(dtype).to(device)
    nw = (1 + torch.randn(h, generator=g) * 0.1).to(dtype).to(device)
    wgu = (torch.randn(2 * i, h, generator=g) / h ** 0.5 * 3).to(dtype).to(device)
    wd = (torch.randn(h, i, generator=g) / i ** 0.5).to(dtype).to(device)
    sumsq = new_sumsq(1, device)
    sumsq[0, 3] = x.double().pow(2).sum()  # as a producer's epilogue leaves it: the row's total, in slots
    return x, nw, wgu, wd, sumsq


def _chain(x, nw, wgu, wd):  # type: ignore[no-untyped-def]
    """The path persistent_mlp replaces: norm (rms_norm_ref's roundings, as the norm kernel
    and the presummed prologue give them), the gate_up GEMV with its SiLU epilogue, the down
    GEMV with its residual epilogue."""
    normed = rms_norm_ref(x, nw, EPS)[0]
    act = skinny_linear(normed, wgu, silu_mul=True)
    sumsq_out = new_sumsq(1, x.device)
    return skinny_linear_residual(act, wd, x, sumsq_out), sumsq_out


def _check(h: int, i: int, device: str, seed: int) -> None:
    x, nw, wgu, wd, sumsq = _inputs(h, i, device, seed)
    sumsq_out = new_sumsq(1, device) + 0.25
    out = persistent_mlp(x, sumsq, nw, EPS, wgu, wd, sumsq_out)
    want, want_sumsq = _chain(x, nw, wgu, wd)
    assert not out.isnan().any(), "unwritten output element"
    assert torch.equal(out, want), f"max diff {(out.float() - want.float()).abs().max().item()}"
    assert torch.equal(sumsq_total(sumsq_out), sumsq_total(want_sumsq) + 8 * 0.25), "the output's sums of squares"
    # Independent of the chain: the MLP in float64 from the same (bf16) weights. The bf16
    # path rounds normed x, gate, up and the activations (relative 2^-8 each, a few of them
    # compounding into each activation) and the output: bound each output by that much of
    # the magnitudes that flow into it.
    xd = x.double()
    normed = xd * torch.rsqrt(xd.pow(2).mean() + EPS) * nw.double()
    act = silu_and_mul_ref(normed @ wgu.double().T)
    ref = xd + act @ wd.double().T
    bound = 2**-8 * (8 * (act.abs() @ wd.double().abs().T) + ref.abs() + xd.abs()) + 1e-6
    assert ((out.double() - ref).abs() <= bound).all(), "beyond bf16 rounding of the float64 MLP"


@pytest.mark.parametrize("h,i", [(96, 50), (64, 37), (128, 200)])  # partial tiles in both phases
def test_persistent_mlp_matches_chain(h, i, device, poison_empty):
    _check(h, i, device, seed=h + i)


@gpu
@pytest.mark.parametrize("h,i", [(2048, 5632), (1024, 3072), (4096, 14336)], ids=["tinyllama", "qwen3", "llama3-8b"])
def test_persistent_mlp_model_shapes(h, i, device):
    for seed in range(3):
        _check(h, i, device, seed)


@gpu
def test_persistent_mlp_repeats_under_a_graph(device):
    """The barrier's words reset themselves: many launches, captured and replayed, all agree."""
    x, nw, wgu, wd, sumsq = _inputs(2048, 5632, device, 7)
    want, _ = _chain(x, nw, wgu, wd)
    outs = []

    def step() -> None:
        for _ in range(4):
            outs.append(persistent_mlp(x, sumsq, nw, EPS, wgu, wd, new_sumsq(1, device)))

    step()  # compiles, sizes the grid
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(o, want) for o in outs)


def test_persistent_mlp_rejects_bad_input(device):
    x, nw, wgu, wd, sumsq = _inputs(64, 37, device, 0)
    with pytest.raises(ValueError, match="one token"):
        persistent_mlp(torch.cat([x, x]), sumsq, nw, EPS, wgu, wd, new_sumsq(1, device))
    with pytest.raises(ValueError, match="do not fit"):
        persistent_mlp(x, sumsq, nw, EPS, wgu[:-2], wd, new_sumsq(1, device))
    with pytest.raises(TypeError, match="one dtype"):
        persistent_mlp(x, sumsq, nw, EPS, wgu.half(), wd, new_sumsq(1, device))
