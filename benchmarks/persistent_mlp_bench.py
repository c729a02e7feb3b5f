"""Device time of a model's batch-1 MLP blocks: the skinny kernel chain against the
persistent MLP kernel (kernels/persistent_mlp.py) in its variants, and each of its phases
alone. All layers of the model get their own weights (nothing comes from L2) and one CUDA
graph holds all of them, so the times include the boundaries between kernels, as in a step.

    python benchmarks/persistent_mlp_bench.py --model dummy:tinyllama-1.1b [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

import titaninfer.kernels.persistent_mlp as pm
from titaninfer.bench.ceilings import get_ceilings
from titaninfer.kernels.skinny_gemm import new_sumsq
from titaninfer.layers.linear import Stream, linear_residual, norm_linear_silu_mul
from titaninfer.layers.norm import RMSNorm
from titaninfer.loader.dummy import dummy_hf_config


def _graph_us(fn, iters: int = 50) -> float:  # type: ignore[no-untyped-def]
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(5):
        graph.replay()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for _ in range(iters):
        graph.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) * 1e3 / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dummy:tinyllama-1.1b")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cfg = dummy_hf_config(args.model.removeprefix("dummy:"))
    h, i, layers, eps = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["rms_norm_eps"]
    dev, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    norms, gate_ups, downs = [], [], []
    for _ in range(layers):
        norm = RMSNorm(h, eps).to(dev, dtype)
        gu = nn.Linear(h, 2 * i, bias=False, device=dev, dtype=dtype)
        down = nn.Linear(i, h, bias=False, device=dev, dtype=dtype)
        with torch.no_grad():
            gu.weight.normal_(0, h ** -0.5)
            down.weight.normal_(0, i ** -0.5)
        norms.append(norm), gate_ups.append(gu), downs.append(down)
    x0 = torch.randn(1, h, device=dev, dtype=dtype)
    sums = new_sumsq(1, dev, (layers + 1,))
    sums[0, 0, 0] = x0.double().pow(2).sum()
    nbytes = layers * 3 * h * i * 2
    bw = get_ceilings("cuda").bw_bytes_per_s
    floor_us = nbytes / bw * 1e6

    def chain() -> None:
        stream = Stream(x0, None, sums[0])
        for layer in range(layers):
            act, summed = norm_linear_silu_mul(stream, norms[layer], gate_ups[layer])
            stream = linear_residual(act, downs[layer], summed, sums[layer + 1])

    def persistent(phase: int = pm.PHASE_BOTH) -> None:
        x = x0
        for layer in range(layers):
            x = pm.persistent_mlp(x, sums[layer], norms[layer].weight, eps, gate_ups[layer].weight,
                                  downs[layer].weight, sums[layer + 1], phase=phase)

    with torch.no_grad():
        rows = []
        t = _graph_us(chain)
        rows.append(("chain (norm? + gate_up/SiLU + down/residual)", t, {}))
        for ahead in (True, False):
            for per_sm in (2, 3, 4, 6, 8):
                pm.LOAD_AHEAD, pm.PROGRAMS_PER_SM = ahead, per_sm
                t = _graph_us(persistent)
                info = next(v for k, v in pm.launch_info.items() if k[-2:] == (ahead, per_sm))
                rows.append((f"persistent ahead={int(ahead)} {per_sm}/SM", t, info))
                if per_sm == 4:
                    for phase, name in ((pm.PHASE_GATE_UP, "gate_up"), (pm.PHASE_DOWN, "down")):
                        rows.append((f"  phase {name} alone", _graph_us(lambda p=phase: persistent(p)), {}))
    print(f"\n{args.model}: {layers} MLP blocks, {nbytes / 1e9:.3f} GB, floor {floor_us:.1f} us "
          f"at {bw / 1e12:.2f} TB/s")
    print(f"{'variant':48} {'us':>8} {'us/layer':>9} {'sol':>6}  regs spills resident grid")
    out = []
    for name, us, info in rows:
        extra = " ".join(str(info.get(k, "")) for k in ("n_regs", "n_spills", "resident_per_sm", "grid"))
        print(f"{name:48} {us:8.1f} {us / layers:9.2f} {floor_us / us:6.3f}  {extra}")
        out.append({"variant": name, "us": us, **info})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "floor_us": floor_us, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
