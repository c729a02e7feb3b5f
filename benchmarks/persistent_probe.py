"""Two numbers a persistent (per-layer) decode kernel depends on, measured on this GPU:

1. a grid-wide barrier: every program adds itself to a counter and spins until all have,
   us per barrier, for 1-8 programs per SM, polling with atomics or volatile loads;
2. how close a persistent GEMV streams weights to the copy bandwidth: grid = programs per
   SM x SMs, each program walking row tiles in a grid-stride loop, against the skinny
   kernel's grid of one program per tile (what the engine runs now).

docs/kernels.md ("The batch-1 decode step") says why these decide whether one kernel per
layer can beat six. GPU only (a spinning program never yields under the interpreter).

    python -m benchmarks.persistent_probe [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl

from benchmarks.graph_replay_time import time_us
from titaninfer.bench.ceilings import get_ceilings
from titaninfer.kernels.skinny_gemm import skinny_linear
from titaninfer.kernels.triton_common import device_sms


@triton.jit
def _barrier_rounds(ctr_ptr, rounds, n_programs, POLL_ATOMIC: tl.constexpr):
    for r in range(rounds):
        tl.debug_barrier()
        tl.atomic_add(ctr_ptr, 1, sem="release", scope="gpu")
        target = (r + 1) * n_programs
        if POLL_ATOMIC:
            seen = tl.atomic_add(ctr_ptr, 0, sem="acquire", scope="gpu")
            while seen < target:
                seen = tl.atomic_add(ctr_ptr, 0, sem="acquire", scope="gpu")
        else:
            seen = tl.load(ctr_ptr, volatile=True)
            while seen < target:
                seen = tl.load(ctr_ptr, volatile=True)
            tl.atomic_add(ctr_ptr, 0, sem="acquire", scope="gpu")  # order what follows after the count
        tl.debug_barrier()


@triton.jit
def _persistent_gemv(w_ptr, x_ptr, out_ptr, K, n_tiles, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out = W @ x for x [K]; program p computes row tiles p, p + P, ..."""
    rows_in_tile = tl.arange(0, BLOCK_N)
    for t in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        rows = t * BLOCK_N + rows_in_tile  # < 2^31 weights here
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            w = tl.load(w_ptr + rows[:, None] * K + ks[None, :])
            x = tl.load(x_ptr + ks)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        tl.store(out_ptr + rows, tl.sum(acc, axis=1).to(out_ptr.dtype.element_ty))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("persistent_probe: needs a CUDA GPU")
    dev = torch.device("cuda")
    sms = device_sms(dev)
    out: dict = {"sms": sms, "barrier": [], "gemv": []}

    rounds = 2000
    print(f"grid barrier, {rounds} rounds per launch ({sms} SMs)")
    for per_sm in (1, 2, 4, 8):
        for poll_atomic in (True, False):
            ctr = torch.zeros(1, dtype=torch.int32, device=dev)
            p = per_sm * sms

            def run(ctr=ctr, p=p, poll_atomic=poll_atomic) -> None:  # type: ignore[no-untyped-def]
                ctr.zero_()
                _barrier_rounds[(p,)](ctr, rounds, p, POLL_ATOMIC=poll_atomic, num_warps=4)

            us = time_us(run, 3, warmup=1) / rounds
            assert ctr.item() == rounds * p, "barrier miscounted"
            out["barrier"].append({"programs_per_sm": per_sm, "poll": "atomic" if poll_atomic else "volatile",
                                   "us": us})
            print(f"  {per_sm} per SM, poll {'atomic' if poll_atomic else 'volatile':8}: {us:6.2f} us per barrier",
                  flush=True)

    bw = get_ceilings("cuda").bw_bytes_per_s
    n, k = 1 << 16, 2048  # 256 MiB of bf16 weights: nothing served from L2
    w = torch.randn(n, k, device=dev).to(torch.bfloat16)
    x = torch.randn(k, device=dev).to(torch.bfloat16)
    y = torch.empty(n, device=dev, dtype=torch.bfloat16)
    nbytes = w.numel() * w.element_size()
    ref = skinny_linear(x[None], w)[0]
    t = time_us(lambda: skinny_linear(x[None], w), 10, warmup=1)
    print(f"\nGEMV {n} x {k} bf16 ({nbytes / 2**20:.0f} MiB), copy ceiling {bw / 1e12:.2f} TB/s")
    print(f"  skinny kernel (one program per 4-row tile): {t:7.1f} us  {nbytes / t / 1e6:5.2f} TB/s")
    out["gemv"].append({"kernel": "skinny", "us": t, "tb_s": nbytes / t / 1e6})
    for per_sm in (1, 2, 4, 8, 16):
        for block_n, block_k, warps, stages in ((4, 1024, 4, 1), (8, 512, 4, 1), (4, 1024, 4, 3), (16, 256, 8, 3)):
            grid = (per_sm * sms,)

            def run(grid=grid, bn=block_n, bk=block_k, nw=warps, ns=stages) -> None:  # type: ignore[no-untyped-def]
                _persistent_gemv[grid](w, x, y, k, n // bn, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns)

            try:
                t = time_us(run, 10, warmup=1)
            except Exception as e:  # noqa: BLE001  (a config that does not fit: report, go on)
                print(f"  persistent {per_sm}/SM n{block_n} k{block_k} w{warps} s{stages}: failed ({e})")
                continue
            ok = torch.allclose(y.float(), ref.float(), rtol=2e-2, atol=2e-2)
            out["gemv"].append({"kernel": "persistent", "programs_per_sm": per_sm, "block_n": block_n,
                                "block_k": block_k, "warps": warps, "stages": stages, "us": t,
                                "tb_s": nbytes / t / 1e6, "correct": ok})
            print(f"  persistent {per_sm:2}/SM n{block_n:<2} k{block_k:<4} w{warps} s{stages}: {t:7.1f} us  "
                  f"{nbytes / t / 1e6:5.2f} TB/s{'' if ok else '  WRONG'}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
