"""Inside a captured decode step: when each kernel's programs start, get past their PDL
wait and finish, from %globaltimer stamps the traced kernels store (skinny GEMV: start,
after the wait, end; decode attention: start, after the wait, partial output computed,
ticket taken, merged). See `triton_common.KernelTrace`.

Captures its own batch-1 graph of the engine's decode step with tracing on, replays it,
and prints per kernel of a layer (medians over layers and replays, us):

    gap      first program past its wait  - previous kernel's last end stamp
    span     last end stamp - first program past its wait
    delta    last end stamp - previous kernel's last end stamp (its share of the step)
    early    programs that started before the first one was released (resident early)
    lead     the release - the median program's start (how long before it the median
             program was resident and loading; negative: started after it)
    attention only, through the last program of each phase: release -> last partial output
    computed -> last ticket taken -> merged

    python benchmarks/kernel_trace.py --model dummy:tinyllama-1.1b [--context 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

import numpy as np
import torch

from benchmarks.critical_path import layer_labels
from benchmarks.graph_replay_time import set_decode_inputs
from titaninfer import LLM
from titaninfer.kernels import triton_common
from titaninfer.runner.cuda_graph import capture_graph

# Stamp indices, as the kernels store them.
START, WAITED, END = 0, 1, 2
A_COMPUTED, A_TICKET, A_MERGED = 2, 3, 4


def kernel_rows(records: list[tuple[str, int, int, int]], stamps: np.ndarray) -> list[dict]:
    """Per traced launch: its name and timings (ns, absolute) from one replay's stamps."""
    rows = []
    for name, off, programs, n in records:
        s = stamps[off:off + programs * n].reshape(programs, n).astype(np.float64)
        waited = s[:, WAITED]
        if name == "attn":
            # Only the merging program stores A_MERGED, and which one merges changes between
            # replays: a stamp older than this replay's release is another replay's.
            s[s[:, A_MERGED] < waited.min(), A_MERGED] = 0
        row = {"name": name, "start_min": s[:, START].min(), "start_max": s[:, START].max(),
               "released": waited.min(),
               "waited_max": waited.max(),
               "end": s[:, END].max() if name == "gemv" else max(s[:, A_COMPUTED:].max(), 0),
               "early": float((s[:, START] < waited.min()).mean()),
               "lead": waited.min() - float(np.median(s[:, START]))}
        if name == "attn":  # the critical path through the phases: the last program of each
            row["compute"] = s[:, A_COMPUTED].max() - waited.min()
            row["ticket"] = s[:, A_TICKET].max() - s[:, A_COMPUTED].max()
            merged = s[:, A_MERGED].max()
            row["merge"] = merged - s[:, A_TICKET].max() if merged > 0 else 0.0
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dummy:tinyllama-1.1b")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--replays", type=int, default=30)
    ap.add_argument("--json", default=None, help="write the per-launch rows of every replay here")
    args = ap.parse_args()
    llm = LLM(args.model, max_num_seqs=8, gpu_memory_utilization=0.5)
    graphs = llm.engine.runner.graphs
    if graphs is None:
        raise SystemExit("kernel_trace: needs CUDA graphs on a GPU")
    if set_decode_inputs(graphs, 1, args.context, llm.engine.runner.num_blocks) != 1:
        raise SystemExit("kernel_trace: no batch-1 decode graph")

    trace = triton_common.KernelTrace(graphs.device)
    triton_common.active_trace = trace

    def traced_step() -> torch.Tensor:
        trace.reset()  # each call (warm-up or captured) stamps into the same slots
        return graphs._forward(*graphs.key_for(1, args.context + 1))

    with torch.inference_mode():
        traced_step()  # compiles the traced variants outside the capture
        graph, _, _ = capture_graph(traced_step, graphs.device, graphs.pool)
    triton_common.active_trace = None
    records = list(trace.records)
    for _ in range(10):
        graph.replay()
    per_replay = []
    for _ in range(args.replays):
        graph.replay()
        graph.replay()  # the second replay follows the first back to back: steady state
        torch.cuda.synchronize()
        per_replay.append(kernel_rows(records, trace.buffer[:trace.used].cpu().numpy()))

    stamps = np.unique(trace.buffer[:trace.used].cpu().numpy())
    steps = np.diff(stamps)
    print(f"timer granularity: smallest step between distinct stamps {steps[steps > 0].min() if steps.size else 0} ns")
    labels = layer_labels([r["name"] for r in per_replay[0]], first_layer_at=0)  # the embedding is not traced
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    spans = []
    for rows in per_replay:
        spans.append((rows[-1]["end"] - rows[0]["released"]) / 1e3)
        for i, r in enumerate(rows):
            st = stats[labels[i]]
            if i:
                st["gap"].append((r["released"] - rows[i - 1]["end"]) / 1e3)
                st["delta"].append((r["end"] - rows[i - 1]["end"]) / 1e3)
            st["span"].append((r["end"] - r["released"]) / 1e3)
            st["early"].append(r["early"])
            st["lead"].append(r["lead"] / 1e3)
            for key in ("compute", "ticket", "merge"):
                if key in r:
                    st[key].append(r[key] / 1e3)
    print(f"{args.model}, context {args.context}: {len(records)} traced launches per step; "
          f"first release to last end, median {statistics.median(spans):.1f} us over {args.replays} replays")
    print(f"{'kernel':<18} {'n':>3} {'gap us':>7} {'span us':>8} {'delta us':>9} {'x n':>7} {'early':>6} {'lead':>6}"
          f" {'compute':>8} {'ticket':>7} {'merge':>6}")
    total = 0.0
    for lab in dict.fromkeys(labels):
        n = labels.count(lab)
        st = stats[lab]

        def med(key: str, st=st) -> float:
            return statistics.median(st[key]) if st[key] else float("nan")

        total += (med("delta") if st["delta"] else 0.0) * n
        extra = "".join(f" {med(k):>{w}.2f}" for k, w in (("compute", 8), ("ticket", 7), ("merge", 6))) \
            if st["compute"] else ""
        print(f"{lab:<18} {n:>3} {med('gap'):>7.2f} {med('span'):>8.2f} {med('delta'):>9.2f} "
              f"{(med('delta') if st['delta'] else 0.0) * n:>7.1f} {med('early'):>6.2f} {med('lead'):>6.2f}{extra}")
    print(f"{'sum of deltas':<18} {'':>3} {'':>7} {'':>8} {'':>9} {total:>7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"labels": labels, "replays": per_replay}, f)


if __name__ == "__main__":
    main()
