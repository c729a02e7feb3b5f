"""The decode attention alone, per split count: us per call and TB/s of K/V, replayed from
a CUDA graph (10 calls per replay, best of 5), against the count `choose_num_splits` picks.

    python -m benchmarks.decode_split_sweep

Where the one-program-per-SM grid (batch 1, short contexts) stops paying: at long
contexts too few programs keep too little K/V in flight (benchmarks/results/README.md).
The output is checked against the one-split kernel (max abs difference printed).
"""

from __future__ import annotations

import functools

import torch

from titaninfer.bench.kernels import _paged
from titaninfer.kernels.decode_attention import (
    choose_num_splits,
    decode_config,
    paged_decode_attention,
)
from titaninfer.kernels.triton_common import device_sms

# (batch, context, query heads, KV heads, head dim)
CASES = ((1, 32768, 32, 8, 128), (1, 8192, 32, 8, 128), (4, 32768, 32, 8, 128), (8, 8192, 32, 8, 128),
         (1, 32768, 32, 4, 64), (1, 2048, 32, 4, 64), (16, 4096, 32, 4, 64), (1, 40960, 16, 8, 128))


def graph_us(fn, calls: int = 10, replays: int = 50) -> float:  # type: ignore[no-untyped-def]
    """Best of 5 timings of `replays` replays of a graph of `calls` calls, us per call."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / (replays * calls))
    return best


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("decode_split_sweep: needs a CUDA GPU")
    sms = device_sms(torch.device("cuda"))
    rows = []
    for batch, ctx, hq, hk, d in CASES:
        k_cache, v_cache, tables = _paged(batch, ctx, hk, d, 16)
        q = torch.randn(batch, hq, d, device="cuda", dtype=torch.bfloat16)
        lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
        out = torch.empty_like(q)
        ref = paged_decode_attention(q, k_cache, v_cache, lens, tables, d ** -0.5, num_splits=1).clone()
        kv_gb = 2 * batch * ctx * hk * d * 2 / 1e9
        auto = choose_num_splits(batch, hk, ctx, sms, decode_config(d)[0])
        for splits in sorted({1, 2, 4, 8, 16, 32, 64, auto}):
            if batch * hk * splits > 4096:
                continue

            us = graph_us(functools.partial(paged_decode_attention, q, k_cache, v_cache, lens, tables, d ** -0.5,
                                            out=out, num_splits=splits))
            err = (out.float() - ref.float()).abs().max().item()
            rows.append((f"B={batch} ctx={ctx} {hq}/{hk}x{d}", splits, batch * hk * splits, us, kv_gb / us * 1e3,
                         err, splits == auto))
            print(rows[-1], flush=True)
    print("\n| case | splits | programs | us | TB/s | max abs diff | picked |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, splits, programs, us, tbs, err, picked in rows:
        print(f"| {name} | {splits} | {programs} | {us:.1f} | {tbs:.2f} | {err:.1e} | {'*' if picked else ''} |")


if __name__ == "__main__":
    main()
