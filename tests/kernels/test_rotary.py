"""rope_and_write_kv / write_kv vs rotary_ref + write_kv_ref, on fused-qkv strided views."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.reference import rotary_ref, write_kv_ref  # noqa: E402
from titaninfer.kernels.rotary import rope_and_write_kv, write_kv  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cos_sin(head_dim: int, max_pos: int, device: str) -> torch.Tensor:
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).float().to(device)


def _fused_qkv(t: int, hq: int, hk: int, d: int, dtype: torch.dtype, device: str):
    qkv = torch.randn(t, (hq + 2 * hk) * d, device=device).to(dtype)
    q, k, v = qkv.split([hq * d, hk * d, hk * d], dim=-1)
    return qkv, q.view(t, hq, d), k.view(t, hk, d), v.view(t, hk, d)


def _slots(t: int, num_slots: int, device: str, num_pad: int) -> torch.Tensor:
    slots = torch.randperm(num_slots)[:t]
    slots[torch.randperm(t)[:num_pad]] = -1  # padding tokens: not stored
    return slots.to(device)


def _caches(num_blocks: int, block_size: int, hk: int, d: int, dtype, device):
    k_cache = torch.full((num_blocks, block_size, hk, d), float("nan"), dtype=dtype, device=device)
    return k_cache, k_cache.clone()


def _run_case(t, hq, hk, d, block_size, dtype, cache_dtype, device, num_pad=2, max_pos=5000):
    qkv, q, k, v = _fused_qkv(t, hq, hk, d, dtype, device)
    num_blocks = (t + block_size - 1) // block_size + 2
    positions = torch.randint(0, max_pos, (t,), device=device)
    slots = _slots(t, num_blocks * block_size, device, min(num_pad, t - 1))
    cos_sin = _cos_sin(d, max_pos, device)
    k_cache, v_cache = _caches(num_blocks, block_size, hk, d, cache_dtype, device)
    k_ref_cache, v_ref_cache = k_cache.clone(), v_cache.clone()

    q_ref, k_rot = rotary_ref(positions, q, k, cos_sin)
    write_kv_ref(k_rot, v, k_ref_cache, v_ref_cache, slots)
    kv_before = qkv[:, hq * d:].clone()

    out = rope_and_write_kv(positions, q, k, v, cos_sin, k_cache, v_cache, slots)
    assert out.data_ptr() == q.data_ptr(), "q is rotated in place"
    # Same math and roundings as the reference: equal up to one ulp (sin/cos fma order).
    ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float32: 1e-6}[dtype]
    torch.testing.assert_close(out, q_ref, rtol=ulp, atol=ulp)
    torch.testing.assert_close(k_cache, k_ref_cache, rtol=ulp, atol=ulp, equal_nan=True)
    assert torch.equal(v_cache.nan_to_num(123.0), v_ref_cache.nan_to_num(123.0))
    assert torch.equal(qkv[:, hq * d:], kv_before), "k and v inputs must stay untouched"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("hq,hk", [(4, 4), (8, 2), (16, 2)])
@pytest.mark.parametrize("block_size", [16, 32])
def test_rope_and_write_kv_matches_reference(hq, hk, block_size, dtype, device):
    _run_case(13, hq, hk, 64, block_size, dtype, dtype, device)


@pytest.mark.parametrize("d", [32, 128, 96])
def test_rope_head_dims(d, device):
    _run_case(5, 4, 2, d, 16, torch.bfloat16, torch.bfloat16, device, num_pad=1)


def test_rope_fp32_activations_into_bf16_cache(device):
    _run_case(7, 4, 2, 64, 16, torch.float32, torch.bfloat16, device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_write_kv_matches_reference(dtype, device):
    t, hq, hk, d, bs = 11, 4, 2, 64, 16
    _, _, k, v = _fused_qkv(t, hq, hk, d, dtype, device)
    slots = _slots(t, 4 * bs, device, 3)
    k_cache, v_cache = _caches(4, bs, hk, d, dtype, device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    write_kv(k, v, k_cache, v_cache, slots)
    write_kv_ref(k, v, k_ref, v_ref, slots)
    assert torch.equal(k_cache.nan_to_num(1.5), k_ref.nan_to_num(1.5))
    assert torch.equal(v_cache.nan_to_num(1.5), v_ref.nan_to_num(1.5))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rope_and_write_kv_gpu_large(dtype):
    _run_case(4099, 32, 8, 128, 16, dtype, dtype, "cuda", num_pad=17, max_pos=131072)
    _run_case(1000, 64, 8, 128, 32, dtype, dtype, "cuda", num_pad=3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hq,hk,d", [(8, 2, 64), (4, 4, 128), (6, 2, 96)])
def test_rope_with_head_norm_matches_norm_then_rope(hq, hk, d, dtype, device):
    """Qwen3: per-head RMSNorm of q and k fused in front of the rotation."""
    from titaninfer.kernels.reference import rms_norm_ref

    t, bs, max_pos = 9, 16, 3000
    qkv, q, k, v = _fused_qkv(t, hq, hk, d, dtype, device)
    qkv.mul_(3)
    positions = torch.randint(0, max_pos, (t,), device=device)
    slots = _slots(t, 4 * bs, device, 2)
    cos_sin = _cos_sin(d, max_pos, device)
    k_cache, v_cache = _caches(4, bs, hk, d, dtype, device)
    k_ref_cache, v_ref_cache = k_cache.clone(), v_cache.clone()
    qw = (1 + 0.2 * torch.randn(d, device=device)).to(dtype)
    kw = (1 + 0.2 * torch.randn(d, device=device)).to(dtype)

    q_ref, k_rot = rotary_ref(positions, rms_norm_ref(q, qw, 1e-6)[0], rms_norm_ref(k, kw, 1e-6)[0], cos_sin)
    write_kv_ref(k_rot, v, k_ref_cache, v_ref_cache, slots)
    out = rope_and_write_kv(positions, q, k, v, cos_sin, k_cache, v_cache, slots, (qw, kw, 1e-6))
    assert out.data_ptr() == q.data_ptr(), "q is normalised and rotated in place"
    # Same roundings as norm-then-rope; a summation-order flip of the normalised value can
    # move one element by an ulp before the rotation.
    ulp = {torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    torch.testing.assert_close(out, q_ref, rtol=2 * ulp, atol=2 * ulp)
    torch.testing.assert_close(k_cache, k_ref_cache, rtol=2 * ulp, atol=2 * ulp, equal_nan=True)
    assert torch.equal(v_cache.nan_to_num(123.0), v_ref_cache.nan_to_num(123.0))


def test_rope_head_norm_weight_shape_is_checked(device):
    qkv, q, k, v = _fused_qkv(3, 4, 2, 64, torch.bfloat16, device)
    k_cache, v_cache = _caches(2, 16, 2, 64, torch.bfloat16, device)
    w = torch.ones(32, device=device, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="head_norm"):
        rope_and_write_kv(torch.zeros(3, dtype=torch.int64, device=device), q, k, v, _cos_sin(64, 8, device),
                          k_cache, v_cache, torch.arange(3, device=device), (w, w, 1e-6))
