"""paged_prefill_attention vs paged_attention_ref: varlen chunks over cached prefixes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.prefill_attention import paged_prefill_attention  # noqa: E402
from titaninfer.kernels.reference import paged_attention_ref  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run_case(make_paged_kv, device, q_lens, seq_lens, hq, hk, d, block_size, dtype,
              config=None, spare_rows=0):
    """Sequence i has seq_lens[i] tokens in the cache; its last q_lens[i] are the queries."""
    k_cache, v_cache, tables = make_paged_kv(seq_lens, hk, d, block_size, dtype, device)
    starts = [0]
    for n in q_lens:
        starts.append(starts[-1] + n)
    t = starts[-1] + spare_rows  # spare rows (CUDA-graph padding) belong to no sequence
    q = torch.randn(t, hq, d, device=device).to(dtype)
    out = torch.full_like(q, float("nan"))
    res = paged_prefill_attention(
        q, k_cache, v_cache, torch.tensor(starts, dtype=torch.int32, device=device),
        torch.tensor(seq_lens, dtype=torch.int32, device=device), tables, max(q_lens),
        d**-0.5, out=out, config=config)
    assert res.data_ptr() == out.data_ptr()
    n = starts[-1]
    ref = paged_attention_ref(q[:n], k_cache, v_cache, starts, seq_lens, tables, d**-0.5)
    assert not out[:n].isnan().any(), "unwritten or poisoned output"
    assert out[n:].isnan().all(), "rows owned by no sequence must not be written"
    atol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(out[:n], ref, rtol=atol, atol=atol)


# (q_lens, seq_lens): fresh prompts, chunks over cached prefixes not a multiple of the
# block size, a single-query row (decode-like), a chunk shorter than one key tile.
MIXED = ([1, 17, 5, 33, 1], [1, 17, 40, 100, 333])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hq,hk", [(2, 2), (4, 1), (8, 1)])  # GQA 1, 4, 8
@pytest.mark.parametrize("block_size", [16, 32])
def test_prefill_matches_reference(make_paged_kv, device, hq, hk, block_size, dtype):
    _run_case(make_paged_kv, device, *MIXED, hq, hk, 64, block_size, dtype, spare_rows=3)


@pytest.mark.parametrize("config", [(16, 64, 4, 1), (64, 16, 4, 2)])
def test_prefill_tile_shapes(make_paged_kv, device, config):
    """Key tiles larger and smaller than a KV block, query tiles of several sizes."""
    _run_case(make_paged_kv, device, [70, 3, 19], [70, 50, 150], 4, 2, 64, 32, torch.float16,
              config=config)


@pytest.mark.parametrize("d", [32, 128])
def test_prefill_head_dims(make_paged_kv, device, d):
    _run_case(make_paged_kv, device, [20, 9], [20, 45], 4, 1, d, 16, torch.bfloat16)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
def test_prefill_gpu_large(make_paged_kv, dtype, block_size):
    q_lens = [1, 17, 333, 1000, 2048, 1, 513]
    seq_lens = [1, 17, 1333, 1000, 2100, 4001, 513]
    _run_case(make_paged_kv, "cuda", q_lens, seq_lens, 32, 8, 128, block_size, dtype)
    _run_case(make_paged_kv, "cuda", [4097], [4097], 32, 4, 64, block_size, dtype)
    _run_case(make_paged_kv, "cuda", [777, 129], [1800, 129], 64, 8, 128, block_size, dtype)
    _run_case(make_paged_kv, "cuda", [300, 1200], [1300, 1200], 16, 16, 128, block_size, dtype)
    _run_case(make_paged_kv, "cuda", [200, 65], [900, 65], 16, 4, 256, block_size, dtype)
