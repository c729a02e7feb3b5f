"""skinny_gemm vs plain PyTorch: prologue reference (rms_norm_ref / silu_and_mul_ref), then a
float32 matmul rounded once. Odd M, N, K (not multiples of any tile), bias, both inner
products (elementwise and tl.dot), fp16/bf16."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.reference import rms_norm_ref, silu_and_mul_ref  # noqa: E402
from titaninfer.kernels.skinny_gemm import (  # noqa: E402
    MAX_M,
    SkinnyConfig,
    new_sumsq,
    pick_config,
    skinny_linear,
    skinny_linear_residual,
    skinny_rmsnorm_linear,
    sumsq_total,
)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DOT = SkinnyConfig(block_n=16, block_k=64, num_warps=4, num_stages=2, use_dot=True)
SMALL = SkinnyConfig(block_n=4, block_k=64, num_warps=4, num_stages=2)
ACC3 = SkinnyConfig(block_n=4, block_k=64, num_warps=4, num_stages=1, loop_tiles=2, acc3=True)  # M > 1


def _matmul_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = x.double() @ w.double().T
    if b is not None:
        out += b.double()
    return out.to(x.dtype)


def _assert_one_rounding(out: torch.Tensor, ref: torch.Tensor) -> None:
    """Same math, other float32 summation order: within one output ulp plus a little."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not out.isnan().any(), "unwritten output element"
    ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7}[out.dtype]
    torch.testing.assert_close(out.float(), ref.float(), rtol=ulp, atol=ulp * ref.float().abs().max().item() * 0.01 + 1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,n,k", [(1, 37, 100), (2, 70, 1100), (3, 65, 200), (8, 20, 64), (MAX_M, 33, 130)])
@pytest.mark.parametrize("config", [None, SMALL, DOT, ACC3], ids=["picked", "elementwise", "dot", "acc3"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_skinny_linear(m, n, k, dtype, config, with_bias, device, poison_empty):
    torch.manual_seed(m * 1000 + n)
    x = torch.randn(m, k, device=device).to(dtype)
    w = (torch.randn(n, k, device=device) / k ** 0.5).to(dtype)
    b = torch.randn(n, device=device).to(dtype) if with_bias else None
    _assert_one_rounding(skinny_linear(x, w, b, config=config), _matmul_ref(x, w, b))


@pytest.mark.parametrize("m,i,k", [(1, 24, 96), (1, 37, 70), (5, 30, 100)])  # I = 37: a partial program
@pytest.mark.parametrize("config", [None, SMALL, DOT, ACC3], ids=["picked", "elementwise", "dot", "acc3"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_skinny_linear_silu_mul_epilogue(m, i, k, config, with_bias, device, poison_empty):
    """silu(gate) * up of a [gate | up] projection in the GEMV's epilogue: bit for bit the
    plain projection (same tiles) followed by `silu_and_mul_ref`."""
    torch.manual_seed(m * 100 + i)
    dtype = torch.bfloat16
    x = torch.randn(m, k, device=device).to(dtype)
    w = (torch.randn(2 * i, k, device=device) / k ** 0.5 * 3).to(dtype)
    b = torch.randn(2 * i, device=device).to(dtype) if with_bias else None
    act = skinny_linear(x, w, b, config=config, silu_mul=True)
    assert act.shape == (m, i)
    assert torch.equal(act, silu_and_mul_ref(skinny_linear(x, w, b, config=config)))
    ref = silu_and_mul_ref(_matmul_ref(x, w, b))  # independent: double-precision projection
    torch.testing.assert_close(act.float(), ref.float(), rtol=3 * 2**-7, atol=0.02)


@pytest.mark.parametrize("config", [None, SMALL, ACC3], ids=["picked", "elementwise", "acc3"])
def test_skinny_rmsnorm_linear_silu_mul(config, device, poison_empty):
    """Norm prologue and SiLU epilogue together (Qwen3's gate_up at batch 1)."""
    torch.manual_seed(5)
    m, i, k, dtype = 1, 20, 96, torch.bfloat16
    x = (torch.randn(m, k, device=device) * 3).to(dtype)
    res = torch.randn(m, k, device=device).to(dtype)
    nw = (1 + torch.randn(k, device=device) * 0.1).to(dtype)
    w = (torch.randn(2 * i, k, device=device) / k ** 0.5 * 3).to(dtype)
    act, new_res = skinny_rmsnorm_linear(x, res, nw, 1e-6, w, None, config=config, silu_mul=True)
    gate_up, plain_res = skinny_rmsnorm_linear(x, res, nw, 1e-6, w, None, config=config)
    assert torch.equal(act, silu_and_mul_ref(gate_up)) and torch.equal(new_res, plain_res)
    with pytest.raises(ValueError, match="even"):
        skinny_linear(x, w[:-1], config=config, silu_mul=True)


@pytest.mark.parametrize("prologue_limit", [0, 1 << 20], ids=["norm-kernel", "norm-prologue"])
def test_layer_skinny_path_silu_epilogue(prologue_limit, device, monkeypatch):
    """layers.linear's skinny path, the norm as a prologue or a kernel first: with the SiLU
    epilogue it gives silu_and_mul of its own plain projection, bit for bit, and the same
    residual stream."""
    from torch import nn

    import titaninfer.kernels.skinny_gemm as sg
    from titaninfer.layers.linear import Stream, _skinny_norm_linear
    from titaninfer.layers.norm import RMSNorm

    monkeypatch.setattr(sg, "_NORM_PROLOGUE_MAX_WORK", prologue_limit)
    torch.manual_seed(9)
    m, i, k, dtype = 1, 20, 96, torch.bfloat16
    norm = RMSNorm(k, 1e-6).to(device=device, dtype=dtype)
    layer = nn.Linear(k, 2 * i, bias=False).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(k) * 0.1)
        layer.weight.copy_(torch.randn(2 * i, k) / k ** 0.5 * 3)
        x = (torch.randn(m, k, device=device) * 3).to(dtype)
        res = torch.randn(m, k, device=device).to(dtype)
        act, act_res = _skinny_norm_linear(Stream(x, res), norm, layer, silu_mul=True)
        gate_up, plain_res = _skinny_norm_linear(Stream(x, res), norm, layer)
    assert act.shape == (m, i)
    assert torch.equal(act, silu_and_mul_ref(gate_up)) and torch.equal(act_res, plain_res)


@pytest.mark.parametrize("m,n,k", [(1, 37, 100), (3, 64, 70)])
@pytest.mark.parametrize("config", [None, SMALL, DOT, ACC3], ids=["picked", "elementwise", "dot", "acc3"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_residual_epilogue(m, n, k, config, with_bias, device, poison_empty):
    """skinny_linear_residual: the stream is bit for bit rms_norm_ref's x + residual of the
    plain projection (same tiles), and the programs' atomic float64 sums add up to each
    row's sum of squares exactly, added onto what sumsq_out held."""
    torch.manual_seed(m * 31 + n)
    dtype = torch.bfloat16
    x = torch.randn(m, k, device=device).to(dtype)
    w = (torch.randn(n, k, device=device) / k ** 0.5).to(dtype)
    b = torch.randn(n, device=device).to(dtype) if with_bias else None
    res = (torch.randn(m, n, device=device) * 4).to(dtype)
    sumsq = new_sumsq(m, device) + 0.5
    stream = skinny_linear_residual(x, w, res, sumsq, b, config=config)
    plain = skinny_linear(x, w, b, config=config)
    expect = rms_norm_ref(plain, torch.ones(n, device=device, dtype=dtype), 1e-6, res)[1]
    assert torch.equal(stream, expect)
    slots = sumsq_total(new_sumsq(1, device) + 0.5).item()  # the 0.5 in each slot
    assert torch.equal(sumsq_total(sumsq), slots + stream.double().pow(2).sum(1)), "the stream's sums of squares"
    torch.testing.assert_close(stream.float(), (_matmul_ref(x, w, b).float() + res.float()), rtol=2**-6, atol=0.05)


@pytest.mark.parametrize("m,n,k,h", [(1, 40, 96, 50), (2, 33, 64, 20)])
@pytest.mark.parametrize("config", [None, SMALL, ACC3], ids=["picked", "elementwise", "acc3"])
@pytest.mark.parametrize("epilogue", ["none", "silu"])
def test_presummed_norm_prologue(m, n, k, h, config, epilogue, device, poison_empty):
    """o_proj-like producer (residual epilogue) then gate_up-like consumer (norm prologue
    from the producer's sums of squares): bit for bit the unfused chain, i.e. the plain
    projection, the norm kernel's add + norm, and the consumer without prologue; also the
    norm prologue that recomputes the sums."""
    from titaninfer.layers.norm import RMSNorm

    torch.manual_seed(n + k)
    dtype = torch.bfloat16
    a = torch.randn(m, h, device=device).to(dtype)
    w_o = (torch.randn(k, h, device=device) / h ** 0.5).to(dtype)
    res = (torch.randn(m, k, device=device) * 3).to(dtype)
    nw = (1 + torch.randn(k, device=device) * 0.1).to(dtype)
    w = (torch.randn(2 * n, k, device=device) / k ** 0.5 * 3).to(dtype)
    silu = epilogue == "silu"
    sumsq = new_sumsq(m, device)
    stream = skinny_linear_residual(a, w_o, res, sumsq, config=config)
    fused, same = skinny_rmsnorm_linear(stream, None, nw, 1e-5, w, None, config=config, silu_mul=silu, sumsq=sumsq)
    assert same is stream
    norm = RMSNorm(k, 1e-5).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(nw)
    normed, summed = norm(skinny_linear(a, w_o, config=config), res)
    assert torch.equal(summed, stream)
    assert torch.equal(fused, skinny_linear(normed, w, config=config, silu_mul=silu)), "vs the norm kernel"
    recomputed, _ = skinny_rmsnorm_linear(stream, None, nw, 1e-5, w, None, config=config, silu_mul=silu)
    assert torch.equal(fused, recomputed), "vs the prologue that recomputes the sum"
    with pytest.raises(ValueError, match="sumsq"):
        skinny_rmsnorm_linear(stream, res, nw, 1e-5, w, None, sumsq=sumsq)
    with pytest.raises(ValueError, match="sumsq"):
        skinny_rmsnorm_linear(stream, None, nw, 1e-5, w, None, sumsq=sumsq.float())
    with pytest.raises(ValueError, match="one epilogue"):
        from titaninfer.kernels.skinny_gemm import _launch

        _launch(a, w_o, None, h, 0, silu_mul=True, add_residual=res, sumsq_out=sumsq)
    with pytest.raises(ValueError, match="needs both"):
        _launch(a, w_o, None, h, 0, add_residual=res)


@pytest.mark.parametrize("presummed_limit", [0, 1 << 30], ids=["norm-kernel", "prologue"])
def test_layer_residual_stream(presummed_limit, device, monkeypatch):
    """layers.linear on the skinny path: o-like projection adding the residual, then the
    gate_up-like one normalising the stream from its sums (or with the norm kernel): the
    same activations and stream as the unfused chain, bit for bit."""
    from torch import nn

    import titaninfer.kernels.skinny_gemm as sg
    from titaninfer.layers.linear import linear_residual, norm_linear_silu_mul, sumsq_slots
    from titaninfer.layers.norm import RMSNorm

    monkeypatch.setattr(sg, "_PRESUMMED_PROLOGUE_MAX_WORK", presummed_limit)
    monkeypatch.setattr(sg, "_NORM_PROLOGUE_MAX_WORK", 0)
    monkeypatch.setattr("titaninfer.layers.linear.use_triton", lambda x: True)  # the interpreter on a CPU
    monkeypatch.setattr("titaninfer.layers.norm.use_triton", lambda x: True)
    torch.manual_seed(11)
    h, k, i, dtype = 48, 64, 24, torch.bfloat16
    o = nn.Linear(h, k, bias=False).to(device=device, dtype=dtype)
    gate_up = nn.Linear(k, 2 * i, bias=False).to(device=device, dtype=dtype)
    norm = RMSNorm(k, 1e-6).to(device=device, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(k) * 0.1)
        a = torch.randn(1, h, device=device).to(dtype)
        res = (torch.randn(1, k, device=device) * 3).to(dtype)
        slots = sumsq_slots(a, 2)
        assert slots is not None
        fused = linear_residual(a, o, res, slots[1])
        assert fused.residual is None and fused.sumsq is not None
        act, stream = norm_linear_silu_mul(fused, norm, gate_up)
        plain = linear_residual(a, o, res)  # no accumulator: the add is left to the norm
        assert plain.residual is res and plain.sumsq is None
        act_ref, stream_ref = norm_linear_silu_mul(plain, norm, gate_up)
    assert torch.equal(stream, stream_ref) and torch.equal(act, act_ref)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("i,k", [(5632, 2048), (3072, 1024), (14336, 4096)])  # TinyLlama, Qwen3, Llama-3-8B
def test_skinny_linear_silu_mul_model_shapes_gpu(i, k):
    x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
    w = (torch.randn(2 * i, k, device="cuda") / k ** 0.5 * 3).to(torch.bfloat16)
    assert torch.equal(skinny_linear(x, w, silu_mul=True), silu_and_mul_ref(skinny_linear(x, w)))


@pytest.mark.parametrize("m,n,k", [(1, 40, 128), (6, 29, 100)])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("config", [None, SMALL, DOT, ACC3], ids=["picked", "elementwise", "dot", "acc3"])
def test_skinny_rmsnorm_linear(m, n, k, with_residual, config, device, poison_empty):
    dtype = torch.bfloat16
    x = (torch.randn(m, k, device=device) * 3).to(dtype)
    res = torch.randn(m, k, device=device).to(dtype) if with_residual else None
    nw = (1 + torch.randn(k, device=device) * 0.1).to(dtype)
    w = (torch.randn(n, k, device=device) / k ** 0.5).to(dtype)
    b = torch.randn(n, device=device).to(dtype)
    out, new_res = skinny_rmsnorm_linear(x, res, nw, 1e-6, w, b, config=config)
    normed, ref_res = rms_norm_ref(x, nw, 1e-6, res)
    _assert_one_rounding(out, _matmul_ref(normed, w, b))
    if with_residual:
        assert torch.equal(new_res, ref_res), "x + residual: one exact rounding"
    else:
        assert new_res is x


def test_rejects_bad_inputs(device):
    x = torch.randn(2, 8, device=device).to(torch.bfloat16)
    with pytest.raises(ValueError, match="MAX_M"):
        skinny_linear(torch.zeros(MAX_M + 1, 8, device=device, dtype=torch.bfloat16), torch.zeros(4, 8, device=device, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="does not take"):
        skinny_linear(x, torch.zeros(4, 9, device=device, dtype=torch.bfloat16))
    with pytest.raises(TypeError):
        skinny_linear(x.float(), torch.zeros(4, 8, device=device))


def test_pick_config_fills_the_gpu():
    for n in (1024, 2048, 4096, 32000):
        cfg = pick_config(1, n, 2048)
        assert n // cfg.block_n >= 2 * 132, "fewer than two programs per SM"
        assert cfg.block_k <= 2048
    assert pick_config(8, 2048, 2048).use_dot
    # Two rows: the 3-D accumulator (measured faster than cuBLAS); one row never needs it.
    assert pick_config(2, 2048, 2048).acc3 and not pick_config(2, 2048, 2048).use_dot
    assert not pick_config(1, 2048, 2048).acc3 and not pick_config(3, 2048, 2048).acc3


def test_norm_prologue_only_where_it_measured_faster():
    from titaninfer.kernels.skinny_gemm import rmsnorm_prologue_pays

    assert rmsnorm_prologue_pays(1, 4096, 1024)  # Qwen3-0.6B qkv
    assert not rmsnorm_prologue_pays(1, 2560, 2048)  # TinyLlama qkv: slower in the captured step
    assert not rmsnorm_prologue_pays(1, 11264, 2048) and not rmsnorm_prologue_pays(1, 6144, 4096)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("n,k", [(2560, 2048), (2048, 5632), (4096, 1024)])
def test_skinny_linear_model_shapes_gpu(m, n, k):
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w = (torch.randn(n, k, device="cuda") / k ** 0.5).to(torch.bfloat16)
    _assert_one_rounding(skinny_linear(x, w), _matmul_ref(x, w, None))


@pytest.mark.parametrize("preload,loop_tiles", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("k", [40, 100, 200, 300])  # 1, 2, 4 and 5 K tiles of 64
def test_weight_tiles_loaded_before_the_wait(preload, loop_tiles, k, device, poison_empty, monkeypatch):
    """The first one or two weight tiles are loaded ahead of the main loop (before the PDL
    wait), the loop takes one or two per iteration; every prologue must still see each K
    tile exactly once, also when K has fewer tiles than are preloaded or an odd count is left."""
    import titaninfer.kernels.skinny_gemm as sg

    monkeypatch.setattr(sg, "_PRELOAD_TILES", preload)
    config = dataclasses.replace(SMALL, loop_tiles=loop_tiles)
    torch.manual_seed(k + preload)
    m, n, dtype = 1, 21, torch.bfloat16
    x = (torch.randn(m, k, device=device) * 3).to(dtype)
    w = (torch.randn(n, k, device=device) / k ** 0.5).to(dtype)
    _assert_one_rounding(skinny_linear(x, w, config=config), _matmul_ref(x, w, None))
    w2 = (torch.randn(2 * n, k, device=device) / k ** 0.5 * 3).to(dtype)
    act = skinny_linear(x, w2, config=config, silu_mul=True)
    torch.testing.assert_close(act.float(), silu_and_mul_ref(_matmul_ref(x, w2, None)).float(), rtol=3 * 2**-7, atol=0.02)
    res = torch.randn(m, k, device=device).to(dtype)
    nw = (1 + torch.randn(k, device=device) * 0.1).to(dtype)
    out, new_res = skinny_rmsnorm_linear(x, res, nw, 1e-6, w, None, config=config)
    normed, ref_res = rms_norm_ref(x, nw, 1e-6, res)
    _assert_one_rounding(out, _matmul_ref(normed, w, None))
    assert torch.equal(new_res, ref_res)


def _qkv_inputs(m: int, hq: int, hk: int, d: int, k: int, device: str, seed: int):
    """x, fused qkv weight and bias, positions, slots (one padded -1 when m > 1), a cos/sin
    table and NaN-filled caches of 6 blocks x 4 slots."""
    gen = torch.Generator().manual_seed(seed)
    n = (hq + 2 * hk) * d
    x = (torch.randn(m, k, generator=gen) * 2).to(torch.bfloat16).to(device)
    w = (torch.randn(n, k, generator=gen) / k ** 0.5).to(torch.bfloat16).to(device)
    b = torch.randn(n, generator=gen).to(torch.bfloat16).to(device)
    positions = torch.randint(0, 40, (m,), generator=gen).to(device)
    slots = torch.randperm(24, generator=gen)[:m]
    if m > 1:
        slots[1] = -1
    angles = torch.arange(40, dtype=torch.float64)[:, None] * (0.7 ** torch.arange(d // 2, dtype=torch.float64))
    cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1).float().to(device)
    cache = torch.full((6, 4, hk, d), float("nan"), dtype=torch.bfloat16, device=device)
    return x, w, b, positions, slots.to(device), cos_sin, cache


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("hq,hk,d", [(4, 2, 16), (6, 1, 32)])
@pytest.mark.parametrize("with_norm,config", [(False, None), (False, SMALL), (False, DOT), (True, None), (True, ACC3)],
                         ids=["picked", "elementwise", "dot", "norm-prologue", "norm-prologue-acc3"])
def test_rope_kv_epilogue(m, hq, hk, d, with_norm, config, device, poison_empty):
    """qkv projection + rotary + KV store in one kernel == the same projection unfused, then
    `rotary_ref` and `write_kv_ref`: q and k rotated in the output, rotated k and v in the
    cache at their slots, nothing stored for slot -1, every output element written."""
    from titaninfer.kernels.reference import rotary_ref, write_kv_ref
    from titaninfer.kernels.skinny_gemm import RopeKVStore, rope_epilogue_fits

    k = 48
    x, w, b, positions, slots, cos_sin, cache = _qkv_inputs(m, hq, hk, d, k, device, seed=m + hq + d)
    k_cache, v_cache = cache.clone(), cache.clone()
    rope = RopeKVStore(positions, cos_sin, k_cache, v_cache, slots, hq * d, hk * d)
    if not rope_epilogue_fits(m, w.shape[0], k, d, config):  # the picked M > 1 tiles span 32 rows
        with pytest.raises(ValueError, match="divide head dim"):
            skinny_linear(x, w, b, config=config, rope=rope)
        return
    if with_norm:
        nw = (1 + torch.randn(k, device=device) * 0.1).to(torch.bfloat16)
        out, _ = skinny_rmsnorm_linear(x, None, nw, 1e-6, w, b, config=config, rope=rope)
        plain, _ = skinny_rmsnorm_linear(x, None, nw, 1e-6, w, b, config=config)
    else:
        out = skinny_linear(x, w, b, config=config, rope=rope)
        plain = skinny_linear(x, w, b, config=config)

    q, kk, v = plain.split([hq * d, hk * d, hk * d], dim=-1)
    q_ref, k_ref = rotary_ref(positions, q.reshape(m, hq, d), kk.reshape(m, hk, d), cos_sin)
    k_cache_ref, v_cache_ref = cache.clone(), cache.clone()
    write_kv_ref(k_ref, v.reshape(m, hk, d), k_cache_ref, v_cache_ref, slots)
    expected = torch.cat((q_ref.reshape(m, -1), k_ref.reshape(m, -1), v), dim=-1)
    # The interpreter computes exactly what the reference does; on a GPU the rotation is one
    # fused multiply-add where torch rounds twice (one ulp apart at most).
    exact = {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 2**-7, "atol": 1e-5}
    torch.testing.assert_close(out, expected, **exact)
    torch.testing.assert_close(k_cache, k_cache_ref, equal_nan=True, **exact)
    torch.testing.assert_close(v_cache, v_cache_ref, equal_nan=True, rtol=0.0, atol=0.0)
    assert int(k_cache.isnan().all(dim=(2, 3)).logical_not().sum()) == int((slots >= 0).sum())


def test_rope_epilogue_rejects_what_it_cannot_fuse(device):
    from titaninfer.kernels.skinny_gemm import RopeKVStore, rope_epilogue_fits

    x, w, b, positions, slots, cos_sin, cache = _qkv_inputs(1, 2, 1, 8, 16, device, seed=0)
    rope = RopeKVStore(positions, cos_sin, cache, cache.clone(), slots, 16, 8)
    assert not rope_epilogue_fits(1, 32, 16, 8, DOT)  # 16 rows per program > one head
    with pytest.raises(ValueError, match="divide head dim"):
        skinny_linear(x, w, b, config=DOT, rope=rope)
    with pytest.raises(ValueError, match="outputs are not"):
        skinny_linear(x, w[:24], b[:24], rope=rope)
    with pytest.raises(ValueError, match="cos_sin_cache"):
        skinny_linear(x, w, b, rope=RopeKVStore(positions, cos_sin.double(), cache, cache, slots, 16, 8))


@gpu
@pytest.mark.gpu
def test_kernel_trace_stamps_each_program_in_order(monkeypatch):
    """With a KernelTrace active, every program stores start <= after-wait <= end (GPU
    nanoseconds), and the output is the untraced kernel's, bit for bit."""
    from titaninfer.kernels import triton_common

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, 2048, generator=g, device="cuda").bfloat16()
    w = torch.randn(2560, 2048, generator=g, device="cuda").bfloat16()
    plain = skinny_linear(x, w)
    trace = triton_common.KernelTrace(torch.device("cuda"))
    monkeypatch.setattr(triton_common, "active_trace", trace)
    traced = skinny_linear(x, w)
    torch.cuda.synchronize()
    assert torch.equal(traced, plain)
    (name, off, programs, n), = trace.records
    s = trace.buffer[off:off + programs * n].view(programs, n).cpu()
    assert name == "gemv" and programs == -(-2560 // pick_config(1, 2560, 2048).block_n)
    assert bool((s > 0).all()) and bool((s[:, 0] <= s[:, 1]).all()) and bool((s[:, 1] <= s[:, 2]).all())
