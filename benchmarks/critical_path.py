"""Where a decode step's time goes under programmatic dependent launch, from a profiler trace.

Under PDL a kernel starts early and waits, so its recorded duration says little; but it
cannot finish before the kernel ahead of it in the stream has, so the time between two
consecutive kernels' END timestamps is what the later one adds to the step's critical path.
This reads the Chrome trace of `titaninfer profile --pdl` (trace.json), cuts it into decode
steps at the embedding kernel (each step's first), and prints per kernel of a layer (qkv,
attention, o, ...; found from the period between attention kernels) the median of those
end-to-end deltas over all layers and steps, and the same for the kernels around the layers.

    python -m titaninfer profile --pdl --model dummy:tinyllama-1.1b -n 1 --input-len 128 \
        --output-len 64 --steps 20 --out /tmp/prof
    python benchmarks/critical_path.py /tmp/prof/trace.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

_SHORT = {"_skinny_gemm_kernel": "gemv", "_decode_split_kernel": "attn", "_rms_norm_kernel": "norm",
          "_embedding_sumsq_kernel": "embed", "_rope_kv_kernel": "rope", "_argmax_kernel": "argmax"}
FIRST = "embed"


def short_name(name: str) -> str:
    for key, short in _SHORT.items():
        if key in name:
            return short
    return name.split("(")[0][:40]


def kernel_events(trace: dict) -> list[tuple[float, float, str]]:
    """(start us, end us, short name) of every GPU kernel, in start order."""
    out = []
    for ev in trace.get("traceEvents", []):
        if ev.get("ph") == "X" and ev.get("cat") == "kernel":
            out.append((float(ev["ts"]), float(ev["ts"]) + float(ev["dur"]), short_name(ev["name"])))
    return sorted(out)


def split_steps(kernels: list[tuple[float, float, str]]) -> list[list[tuple[float, float, str]]]:
    """Runs of kernels from one embedding kernel to the next; only full-length runs (the
    decode steps: prefill steps launch other kernels) of the most common length are kept."""
    steps, cur = [], None
    for k in kernels:
        if k[2] == FIRST:
            if cur:
                steps.append(cur)
            cur = [k]
        elif cur is not None:
            cur.append(k)
    if cur:
        steps.append(cur)
    if not steps:
        return []
    lengths = [tuple(n for _, _, n in s) for s in steps]
    common = max(set(lengths), key=lengths.count)
    return [s for s, sig in zip(steps, lengths, strict=True) if sig == common]


def layer_labels(names: list[str], first_layer_at: int) -> list[str]:
    """Label each kernel of a step 'layer[i] name', i its position in the repeating layer
    pattern (period: the distance between attention kernels; the first layer starts at
    index first_layer_at), or 'pre name' / 'post name' before and after the layers."""
    attn = [i for i, n in enumerate(names) if n == "attn"]
    if len(attn) < 2:
        return names
    period = attn[1] - attn[0]
    end = first_layer_at + period * len(attn)
    labels = []
    for i, n in enumerate(names):
        if first_layer_at <= i < end:
            labels.append(f"layer[{(i - first_layer_at) % period}] {n}")
        else:
            labels.append(("pre " if i < first_layer_at else "post ") + n)
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    args = ap.parse_args()
    with open(args.trace) as f:
        steps = split_steps(kernel_events(json.load(f)))
    if not steps:
        raise SystemExit(f"{args.trace}: no decode steps found (no '{FIRST}' kernels)")
    names = [n for _, _, n in steps[0]]
    labels = layer_labels(names, first_layer_at=1)  # after the embedding
    deltas: dict[str, list[float]] = defaultdict(list)
    durs: dict[str, list[float]] = defaultdict(list)
    spans = []
    for s in steps:
        spans.append(s[-1][1] - s[0][0])
        for i, (st, en, _) in enumerate(s):
            durs[labels[i]].append(en - st)
            if i:
                deltas[labels[i]].append(en - s[i - 1][1])
    order = list(dict.fromkeys(labels))
    n_layers = sum(1 for n in names if n == "attn")
    print(f"{len(steps)} decode steps of {len(names)} kernels ({n_layers} layers); "
          f"first start to last end, median {statistics.median(spans):.1f} us")
    print(f"{'kernel':<24} {'count/step':>10} {'end-to-end us (median)':>24} {'x count':>9} {'duration us':>12}")
    total = 0.0
    for lab in order:
        per_step = labels.count(lab)
        d = statistics.median(deltas[lab]) if deltas[lab] else 0.0
        total += d * per_step
        print(f"{lab:<24} {per_step:>10} {d:>24.2f} {d * per_step:>9.1f} {statistics.median(durs[lab]):>12.2f}")
    print(f"{'sum of medians':<24} {'':>10} {'':>24} {total:>9.1f}")


if __name__ == "__main__":
    main()
