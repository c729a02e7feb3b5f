"""Where a batch-1 decode step's time goes outside the captured graph, in one process.

Runs one request (128 prompt tokens, greedy) through the engine, then:
1. the inter-token latency of engine steps (no profiler), and the same process's graph
   replayed back to back (`graph_replay_time.py`'s number), so their difference, the
   share outside the graph, is measured on one machine;
2. a CUDA trace of 30 steps (torch.profiler): per step, the device time of each op name
   (graph kernels and the copies, fills and sampling kernels around them) and the idle
   time of the device between ops.

    python -m benchmarks.step_timeline --model dummy:tinyllama-1.1b [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.graph_replay_time import replay_us
from titaninfer import LLM, SamplingParams


def _decode_steps(eng, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Wall time of n engine steps (the request must stay unfinished throughout)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        eng.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dummy:tinyllama-1.1b")
    ap.add_argument("--steps", type=int, default=30, help="steps traced")
    ap.add_argument("--json", default=None)
    ap.add_argument("--max-num-seqs", type=int, default=8, help="the bench's engines use 256")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="the bench's engines use 0.9")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("step_timeline: needs a CUDA GPU")
    llm = LLM(args.model, max_num_seqs=args.max_num_seqs, gpu_memory_utilization=args.gpu_memory_utilization)
    eng = llm.engine
    params = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)
    prompt_len, warm_steps, timed_steps = 128, 40, 200
    eng.add_request(list(range(1, prompt_len + 1)), params, request_id="r0")
    _decode_steps(eng, warm_steps)  # prefill, then warm decode steps
    torch.cuda.synchronize()
    itl = statistics.median(_decode_steps(eng, timed_steps))

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _decode_steps(eng, args.steps)
        torch.cuda.synchronize()
    events = sorted(((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA), key=lambda t: t[0])
    per_name: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    idle = 0.0
    busy_end = events[0][0] if events else 0.0
    for start, end, name in events:
        per_name[name] += end - start
        count[name] += 1
        idle += max(0.0, start - busy_end)
        busy_end = max(busy_end, end)
    span = busy_end - events[0][0] if events else 0.0

    graphs = eng.runner.graphs
    # The graph the engine replayed: the context tier that holds the sequence by now.
    longest = prompt_len + warm_steps + timed_steps + args.steps
    replay = replay_us(graphs.graphs[graphs.key_for(1, longest)]) if graphs is not None else float("nan")

    n = args.steps
    rows = sorted(per_name.items(), key=lambda kv: -kv[1])
    print(f"{args.model}: engine step (ITL) {itl * 1e6:.1f} us median; graph replayed back to back "
          f"{replay:.1f} us; outside the graph {itl * 1e6 - replay:.1f} us per step")
    print(f"trace of {n} steps: {span / n:.1f} us per step, device idle {idle / n:.1f} us per step "
          "(the profiler stretches steps; shares matter, not totals)")
    print("\n| op | per step | us per step |\n|---|---:|---:|")
    for name, us in rows[:25]:
        print(f"| {name[:90]} | {count[name] / n:.1f} | {us / n:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "itl_us": itl * 1e6, "replay_us": replay, "steps": n,
                       "span_us_per_step": span / n, "idle_us_per_step": idle / n,
                       "ops": [{"name": k, "per_step": count[k] / n, "us_per_step": v / n} for k, v in rows]},
                      f, indent=1)


if __name__ == "__main__":
    main()
