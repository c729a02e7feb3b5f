# ruff: noqa: B023  (every closure here is timed before its loop variables move on)
"""Sweep the skinny GEMM's tiles on the projections that decode at small batches, against
cuBLAS (F.linear), as they run inside a decode step: each timing replays a CUDA graph that
runs the projection over R distinct weight copies (>= 256 MB in all, so nothing is served
from L2 and no launch gap is counted). Also times the fused RMSNorm prologue against the separate
kernels it replaces (RMSNorm + cuBLAS). GPU only.

    python benchmarks/skinny_sweep.py [--budget-s 150] [--ms 1,2] [--json out.json]

TB/s counts weight bytes only (x and out are < 0.5% of them at M <= 16).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from titaninfer.kernels.rmsnorm import rms_norm
from titaninfer.kernels.skinny_gemm import (
    SkinnyConfig,
    pick_config,
    skinny_linear,
    skinny_rmsnorm_linear,
)

SHAPES = {  # (N, K) of each projection: qkv, o, gate_up, down
    "tiny.qkv": (2560, 2048), "tiny.o": (2048, 2048), "tiny.gate_up": (11264, 2048), "tiny.down": (2048, 5632),
    "8b.qkv": (6144, 4096), "8b.o": (4096, 4096), "8b.gate_up": (28672, 4096), "8b.down": (4096, 14336),
    "qwen.qkv": (4096, 1024), "qwen.o": (1024, 2048), "qwen.gate_up": (6144, 1024), "qwen.down": (1024, 3072),
}
ROTATE_BYTES = 256 << 20


def rotating_weights(n: int, k: int) -> list[torch.Tensor]:
    """Enough distinct [n, k] bf16 copies (2..64) to stream >= ROTATE_BYTES per graph replay."""
    copies = max(2, min(64, ROTATE_BYTES // (n * k * 2)))
    return [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5 for _ in range(copies)]


def configs() -> list[SkinnyConfig]:
    return [SkinnyConfig(bn, bk, w, s)
            for bn, bk, w, s in itertools.product((2, 4, 8, 16), (512, 1024, 2048), (4, 8), (1, 2))]


# --acc3: the M > 1 accumulator form (SkinnyConfig.acc3), per M: (block_n, block_k, warps).
ACC3_CONFIGS = {
    2: [(4, 1024, 4), (4, 1024, 8), (2, 1024, 4), (4, 512, 4)],
    4: [(2, 1024, 4), (4, 1024, 8), (4, 512, 4), (2, 512, 4)],
    8: [(2, 1024, 8), (2, 512, 4), (4, 512, 8), (2, 256, 4)],
}


def acc3_configs(m: int) -> list[SkinnyConfig]:
    return [SkinnyConfig(bn, bk, w, 1, loop_tiles=lt, acc3=True)
            for bn, bk, w in ACC3_CONFIGS[m] for lt in (1, 2)]


def graph_time_us(step: Callable[[int], object], copies: int) -> float:
    """Median time per call of step(i) for i over the copies, replayed as one CUDA graph."""
    for i in range(copies):  # compile + warm outside the capture
        step(i)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(copies):
            step(i)
    g.replay()
    times = []
    for _ in range(7):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / copies)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-s", type=float, default=150)
    ap.add_argument("--json", default=None)
    ap.add_argument("--ms", default="1,2")
    ap.add_argument("--acc3", action="store_true", help="sweep the M > 1 accumulator form instead")
    ap.add_argument("--shapes", default=None, help="comma-separated names from SHAPES (default: all)")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused-prologue table")
    args = ap.parse_args()
    shapes = {s: SHAPES[s] for s in args.shapes.split(",")} if args.shapes else SHAPES
    t_end = time.time() + args.budget_s
    dev, bf16 = "cuda", torch.bfloat16
    rows, results = [], []
    for m in [int(v) for v in args.ms.split(",")]:
        for name, (n, k) in shapes.items():
            if time.time() > t_end:
                print(f"budget spent: stopped before m={m} {name}")
                break
            ws = rotating_weights(n, k)
            copies = len(ws)
            x = torch.randn(m, k, device=dev, dtype=bf16)
            ref = F.linear(x.float(), ws[0].float())
            tb = lambda t: n * k * 2 / t / 1e6  # noqa: E731  bytes / us -> TB/s
            t_cublas = graph_time_us(lambda i: F.linear(x, ws[i]), copies)
            best: tuple[float, SkinnyConfig | None] = (float("inf"), None)
            for cfg in (acc3_configs(m) if args.acc3 else configs()):
                try:
                    out = skinny_linear(x, ws[0], config=cfg)
                    if not torch.allclose(out.float(), ref, atol=5e-2, rtol=2e-2):
                        print(f"WRONG {name} m={m} {cfg}")
                        continue
                    t = graph_time_us(lambda i: skinny_linear(x, ws[i], config=cfg), copies)
                except Exception as e:  # out of resources etc.: skip the config
                    print(f"skip {cfg}: {type(e).__name__}: {str(e)[:80]}")
                    continue
                results.append({"m": m, "shape": name, "n": n, "k": k, "cfg": cfg.__dict__, "us": t})
                best = min(best, (t, cfg), key=lambda p: p[0])
            picked = pick_config(m, n, k)
            t_picked = graph_time_us(lambda i: skinny_linear(x, ws[i], config=picked), copies)
            rows.append((m, name, t_cublas, tb(t_cublas), t_picked, tb(t_picked), best[0], tb(best[0]), best[1]))
            print(f"m={m} {name:<13} cublas {t_cublas:6.1f}us {tb(t_cublas):4.2f}TB/s  picked {t_picked:6.1f}us "
                  f"{tb(t_picked):4.2f}  best {best[0]:6.1f}us {tb(best[0]):4.2f} {best[1]}", flush=True)
            ws.clear()  # free before the next shape allocates

    print("\nfused prologues at m=1 (graph replay, rotating weights): separate kernels vs one pass")
    fused_rows = []
    for name in () if args.no_fused else ("tiny.qkv", "tiny.gate_up", "8b.qkv", "qwen.qkv"):
        n, k = SHAPES[name]
        ws = rotating_weights(n, k)
        copies = len(ws)
        x, r = torch.randn(1, k, device=dev, dtype=bf16), torch.randn(1, k, device=dev, dtype=bf16)
        nw = torch.ones(k, device=dev, dtype=bf16)
        sep = graph_time_us(lambda i: F.linear(rms_norm(x, nw, 1e-6, r)[0], ws[i]), copies)
        fused = graph_time_us(lambda i: skinny_rmsnorm_linear(x, r, nw, 1e-6, ws[i]), copies)
        plain = graph_time_us(lambda i: skinny_linear(x, ws[i]), copies)
        fused_rows.append((f"rmsnorm+{name}", sep, fused, plain))
        ws.clear()  # free before the next shape allocates

    print("\n| m | shape | cuBLAS us | TB/s | picked us | TB/s | best us | TB/s | best config |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, name, tc, bc, tp, bp, tbst, bb, cfg in rows:
        c = cfg and f"n{cfg.block_n} k{cfg.block_k} w{cfg.num_warps} s{cfg.num_stages} l{cfg.loop_tiles}"
        print(f"| {m} | {name} | {tc:.1f} | {bc:.2f} | {tp:.1f} | {bp:.2f} | {tbst:.1f} | {bb:.2f} | {c} |")
    print("\n| op (m=1) | separate kernels + cuBLAS us | fused skinny us | skinny without prologue us |")
    print("|---|---|---|---|")
    for name, sep, fused, plain in fused_rows:
        print(f"| {name} | {sep:.1f} | {fused:.1f} | {plain:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
