"""The two attention references agree, and garbage (NaN) in cache slots no sequence owns
never leaks into an output."""

from __future__ import annotations

import torch

from titaninfer.kernels.reference import (
    paged_attention_ref,
    paged_decode_attention_ref,
    write_kv_ref,
)


def test_decode_ref_matches_general_ref_with_poisoned_cache():
    torch.manual_seed(0)
    nb, bs, hk, d, hq = 20, 4, 2, 8, 6
    k_cache = torch.full((nb, bs, hk, d), float("nan"))
    v_cache = torch.full((nb, bs, hk, d), float("nan"))
    seq_lens = [5, 1, 13]
    perm = torch.randperm(nb)
    tables = torch.zeros(3, 4, dtype=torch.int64)
    used = 0
    for i, n in enumerate(seq_lens):
        nblk = -(-n // bs)
        tables[i, :nblk] = perm[used:used + nblk]
        used += nblk
        slots = torch.tensor([int(tables[i, p // bs]) * bs + p % bs for p in range(n)])
        write_kv_ref(torch.randn(n, hk, d), torch.randn(n, hk, d), k_cache, v_cache, slots)
    q = torch.randn(3, hq, d)
    dec = paged_decode_attention_ref(q, k_cache, v_cache, torch.tensor(seq_lens), tables, 0.3)
    gen = paged_attention_ref(q, k_cache, v_cache, [0, 1, 2, 3], seq_lens, tables, 0.3)
    assert torch.isfinite(dec).all()
    assert torch.allclose(dec, gen, atol=1e-5)
