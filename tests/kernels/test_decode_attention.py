"""paged_decode_attention vs the references: GQA, splits, odd lengths, poisoned caches."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed: kernel tests need it")

from titaninfer.kernels.decode_attention import (  # noqa: E402
    _ONE_WAVE_MAX_TILES,
    choose_num_splits,
    context_tiers,
    decode_config,
    one_wave_max_context,
    paged_decode_attention,
    preloads,
    warm_up_calls,
)
from titaninfer.kernels.reference import (  # noqa: E402
    paged_attention_ref,
    paged_decode_attention_ref,
)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _reference(q, k_cache, v_cache, seq_lens: list[int], tables, scale) -> torch.Tensor:
    """Decode is attention with one query per sequence; this reference gathers exactly
    seq_len tokens, so the NaN-poisoned slots past each context never enter it."""
    return paged_attention_ref(q, k_cache, v_cache, list(range(len(seq_lens) + 1)), seq_lens,
                               tables, scale)


def _run_case(make_paged_kv, device, seq_lens, hq, hk, d, block_size, dtype,
              num_splits=None, max_seq_len=None):
    k_cache, v_cache, tables = make_paged_kv(seq_lens, hk, d, block_size, dtype, device)
    q = torch.randn(len(seq_lens), hq, d, device=device).to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    out = torch.full_like(q, float("nan"))
    res = paged_decode_attention(q, k_cache, v_cache, lens, tables, d**-0.5,
                                 max_seq_len=max_seq_len, out=out, num_splits=num_splits)
    assert res.data_ptr() == out.data_ptr()
    ref = _reference(q, k_cache, v_cache, seq_lens, tables, d**-0.5)
    assert not out.isnan().any(), "unwritten or poisoned output"
    atol = 2e-2 if dtype == torch.bfloat16 else 4e-3  # p is rounded to bf16/fp16 for the PV dot
    torch.testing.assert_close(out, ref, rtol=atol, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hq,hk", [(4, 4), (8, 2), (16, 2)])
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_matches_reference(make_paged_kv, device, hq, hk, block_size, dtype):
    _run_case(make_paged_kv, device, [1, 17, 333], hq, hk, 64, block_size, dtype)


@pytest.mark.parametrize("num_splits", [2, 3, 7])
def test_decode_split_k(make_paged_kv, device, num_splits):
    """Forced splits, with sequences shorter than the split count (empty splits)."""
    _run_case(make_paged_kv, device, [300, 1, 65, 129], 8, 2, 64, 16, torch.bfloat16,
              num_splits=num_splits)


def test_decode_merge_over_several_chunks(make_paged_kv, device):
    """16 filled splits merged 4 at a time (D = 128: a [16, 4, 128] tile per step), so the
    online merge rescales across chunks; a 5-token row fills one split, a 0-token row none."""
    _run_case(make_paged_kv, device, [1500, 5, 0], 8, 2, 128, 16, torch.bfloat16, num_splits=16)


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("preload", [True, False])
def test_decode_first_tile_before_the_wait(make_paged_kv, device, preload, num_splits, monkeypatch):
    """The first K/V tile loaded before the PDL wait (the new token's row after it) and the
    plain kernel: against the reference, with single-token and empty rows, and rows whose
    last token is in the first tile of its split or (one split of 300 tokens: three 128-token
    tiles, the later ones in the loop) in a later one."""
    import titaninfer.kernels.decode_attention as da

    monkeypatch.setattr(da, "PRELOAD_FIRST_TILE", preload)
    _run_case(make_paged_kv, device, [1, 300, 0, 65], 8, 2, 64, 16, torch.bfloat16, num_splits=num_splits)


@pytest.mark.parametrize("d", [32, 128])
def test_decode_head_dims(make_paged_kv, device, d):
    _run_case(make_paged_kv, device, [40, 3], 8, 1, d, 16, torch.float16, num_splits=2)


def test_decode_block_size_64(make_paged_kv, device):
    _run_case(make_paged_kv, device, [130, 64], 8, 2, 64, 64, torch.bfloat16)


def test_decode_zero_length_row_gives_zeros(make_paged_kv, device):
    """Padded rows of a CUDA-graph batch may have seq_len 0: zeros, not NaN."""
    k_cache, v_cache, tables = make_paged_kv([5, 1], 2, 64, 16, torch.float16, device)
    q = torch.randn(3, 4, 64, device=device).to(torch.float16)
    tables = torch.cat([tables, tables[:1]])
    lens = torch.tensor([5, 0, 1], dtype=torch.int32, device=device)
    for splits in (1, 3):
        out = paged_decode_attention(q, k_cache, v_cache, lens, tables, 0.125, num_splits=splits)
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        assert not out.isnan().any()


def test_decode_agrees_with_decode_reference(device, poison_empty):
    """On a NaN-free cache the vectorised decode reference gives the same answer."""
    b, hq, hk, d, bs, nb = 3, 8, 2, 64, 16, 40
    k_cache = torch.randn(nb, bs, hk, d, device=device).to(torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(nb)[: b * 10].view(b, 10).int().to(device)
    lens = torch.tensor([100, 7, 160], dtype=torch.int32, device=device)
    q = torch.randn(b, hq, d, device=device).to(torch.bfloat16)
    ref = paged_decode_attention_ref(q, k_cache, v_cache, lens, tables, 0.1)
    for splits in (None, 4):
        out = paged_decode_attention(q, k_cache, v_cache, lens, tables, 0.1, num_splits=splits)
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_split_heuristic_depends_only_on_static_sizes():
    assert choose_num_splits(64, 8, 4096, 132, 64) == 1  # 512 programs already fill the GPU
    assert choose_num_splits(1, 8, 32768, 132, 64) == 64  # long single sequence: split-K
    assert choose_num_splits(1, 8, 1024, 132, 64) == 16  # short: one program per SM
    assert choose_num_splits(1, 4, 2048, 132, 128) == 32
    assert choose_num_splits(1, 8, 2048, 132, 64) == 8  # two tiles per program: the slots rule
    assert choose_num_splits(1, 8, 300, 132, 64) == 8  # one 64-token tile each (5 filled)
    assert choose_num_splits(1, 8, 1 << 20, 132, 64) <= 64


@pytest.mark.parametrize("num_sms", [132, 78])
def test_one_program_per_sm_only_where_each_holds_its_preloaded_tile(num_sms):
    """Brute force over batch, KV heads, tile length and context bound: where the grid is
    one program per SM (the first tile preloaded before the PDL wait) no program holds more
    than _ONE_WAVE_MAX_TILES tiles (the first one preloaded)."""
    for b in range(1, 40):
        for hk in (1, 2, 4, 8):
            for block_n in (32, 64, 128):
                short = one_wave_max_context(b, hk, num_sms, block_n)
                for ctx in (1, 63, 64, 300, 1000, 2048, 2049, 4096, 8192, 40960):
                    splits = choose_num_splits(b, hk, ctx, num_sms, block_n)
                    per_split = math.ceil(math.ceil(ctx / splits) / block_n) * block_n  # as the kernel cuts
                    if ctx <= short:
                        assert b * hk * splits <= num_sms
                        assert per_split <= _ONE_WAVE_MAX_TILES * block_n, (b, hk, block_n, ctx, splits)


@pytest.mark.parametrize("num_sms", [132, 78, 16])
def test_warm_up_compiles_every_variant_a_step_can_pick(num_sms):
    """The start-up warm-up (`warm_up_calls`) covers every (NUM_SPLITS, PRELOAD) pair any
    batch can reach with any power-of-two split count (a mixed step's decode rows may take
    a count no decode-only batch takes), so nothing compiles mid-run."""
    for hk in (1, 2, 3, 4, 8, 16):
        warmed = {(s, preloads(b, hk, s, num_sms)) for b, s in warm_up_calls(hk, num_sms)}
        for b in range(1, 600):
            for s in (1, 2, 4, 8, 16, 32, 64):
                assert (s, preloads(b, hk, s, num_sms)) in warmed, (hk, b, s)
        assert len(warmed) == len(warm_up_calls(hk, num_sms))  # no call compiles nothing new


def test_context_tiers_split_where_the_grid_changes():
    tiers = context_tiers(1, 8, 40960, 132, 128)  # Qwen3-0.6B, batch 1
    assert tiers == (1024, 40960)
    assert choose_num_splits(1, 8, tiers[0], 132, 64) == 16  # 128 programs, preloading
    assert choose_num_splits(1, 8, tiers[1], 132, 64) == 64
    assert context_tiers(1, 4, 2048, 132, 64) == (2048,)  # TinyLlama: one grid for all contexts
    assert context_tiers(64, 8, 8192, 132, 128) == (8192,)  # no split at all
    for b in range(1, 300):
        for hk, d, ctx in ((4, 64, 2048), (8, 128, 8192), (8, 128, 40960)):
            tiers = context_tiers(b, hk, ctx, 132, d)
            assert tiers[-1] == ctx and list(tiers) == sorted(set(tiers))
            grids = {choose_num_splits(b, hk, t, 132, decode_config(d)[0]) for t in tiers}
            assert len(grids) == len(tiers)  # a second tier only where the grid differs


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [16, 32])
def test_decode_gpu_large(make_paged_kv, dtype, block_size):
    lens = [1, 17, 333, 1000, 1025, 4096, 2049, 77] * 4
    _run_case(make_paged_kv, "cuda", lens, 32, 8, 128, block_size, dtype)
    _run_case(make_paged_kv, "cuda", [32768], 32, 8, 128, block_size, dtype)  # split-K
    _run_case(make_paged_kv, "cuda", [5000, 3], 32, 4, 64, block_size, dtype)
    _run_case(make_paged_kv, "cuda", [3000, 4000], 64, 8, 128, block_size, dtype)  # GQA 8
    _run_case(make_paged_kv, "cuda", [2000, 1], 16, 16, 128, block_size, dtype)  # MHA
    _run_case(make_paged_kv, "cuda", [700, 1500], 16, 4, 256, block_size, dtype)


@gpu
@pytest.mark.gpu
def test_decode_cuda_graph_capture(make_paged_kv):
    """Capture once, replay with new lengths and tables: same as eager, no host sync."""
    b, hq, hk, d, bs = 4, 32, 8, 128, 16
    k_cache, v_cache, tables = make_paged_kv([4000] * b, hk, d, bs, torch.bfloat16, "cuda")
    q = torch.randn(b, hq, d, device="cuda").to(torch.bfloat16)
    lens = torch.full((b,), 4000, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    max_len = tables.shape[1] * bs
    for _ in range(2):  # compile and warm up outside the graph
        paged_decode_attention(q, k_cache, v_cache, lens, tables, d**-0.5, max_len, out)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        paged_decode_attention(q, k_cache, v_cache, lens, tables, d**-0.5, max_len, out)
    for new_lens in ([1, 17, 333, 4000], [4000, 2500, 1, 64]):
        lens.copy_(torch.tensor(new_lens, dtype=torch.int32))
        q.copy_(torch.randn_like(q))
        graph.replay()
        torch.cuda.synchronize()
        ref = _reference(q, k_cache, v_cache, new_lens, tables, d**-0.5)
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)


def test_split_count_has_few_variants() -> None:
    """NUM_SPLITS is a constexpr: eager steps with ever-changing batch and context must not
    compile a new kernel per step."""
    variants = {choose_num_splits(b, hk, ctx, 132, block_n) for b in range(1, 300) for hk in (2, 8)
                for ctx in range(1, 40000, 97) for block_n in (64, 128)}
    assert variants <= {1, 2, 4, 8, 16, 32, 64}


def test_split_tickets_are_reset_for_the_next_call(make_paged_kv, device):
    """The last split of each (sequence, KV head) merges and zeroes its counter: a second
    call (the next layer) merges again, to the same output, and leaves every counter 0."""
    from titaninfer.kernels.triton_common import zeroed_counters

    k_cache, v_cache, tables = make_paged_kv([50, 7, 0], 2, 32, 16, torch.bfloat16, device)
    q = torch.randn(3, 4, 32, device=device).to(torch.bfloat16)
    lens = torch.tensor([50, 7, 0], dtype=torch.int32, device=device)
    first = paged_decode_attention(q, k_cache, v_cache, lens, tables, 0.2, num_splits=4)
    assert int(zeroed_counters(q.device, 6, "decode_attention")[:6].abs().sum()) == 0
    second = paged_decode_attention(q, k_cache, v_cache, lens, tables, 0.2, num_splits=4)
    assert torch.equal(first, second)
    assert not first[2].any(), "a zero-length row (all splits empty) gives zeros"

