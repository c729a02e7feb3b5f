"""Device time of one captured decode step, without the host: replays the batch-B CUDA
graph back to back and reports its time against the step's floor (weights + LM head + the
KV context at the step's bandwidth ceiling, as titaninfer/bench/sol.py counts them).

`bench latency`'s tokens/s include the host's share of each step (scheduling, sampling,
output processing); this separates the two. Variants of tuning constants run through
benchmarks/with_overrides.py.

    python benchmarks/graph_replay_time.py --model dummy:tinyllama-1.1b [--batch 1] [--context 256]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from titaninfer import LLM
from titaninfer.bench.ceilings import get_ceilings
from titaninfer.bench.sol import Chunk, ModelCost, step_cost
from titaninfer.runner.cuda_graph import DecodeGraphs


def time_us(fn: Callable[[], object], iters: int = 300, warmup: int = 20) -> float:
    """Device time of one call of `fn`, called back to back (CUDA events), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def replay_us(graph: torch.cuda.CUDAGraph, iters: int = 300, warmup: int = 20) -> float:
    """Device time of one replay of `graph`, replayed back to back."""
    return time_us(graph.replay, iters, warmup)


def set_decode_inputs(graphs: DecodeGraphs, batch: int, context: int, num_blocks: int) -> int:
    """Fill the decode graphs' input buffers for `batch` sequences of `context` cached
    tokens each; returns the captured batch size that runs them. Each row owns its own
    blocks; the new token goes to slot `context` of its sequence."""
    bs = graphs.size_for(batch)
    blocks = -(-(context + 1) // graphs.block_size)
    if bs is None or blocks > graphs.max_blocks or bs * blocks > num_blocks:
        raise SystemExit(f"batch {batch} x context {context} does not fit the captured graphs")
    tables = torch.arange(bs * blocks, dtype=torch.int32, device=graphs.device).view(bs, blocks)
    inp = graphs.inputs[bs]
    inp.block_tables[:, :blocks] = tables
    inp.seq_lens[:] = context + 1
    inp.positions[:] = context
    inp.slot_mapping[:] = tables[:, context // graphs.block_size].long() * graphs.block_size \
        + context % graphs.block_size
    return bs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dummy:tinyllama-1.1b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--context", type=int, default=256, help="tokens already cached per sequence")
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    llm = LLM(args.model, max_num_seqs=max(args.batch, 8), gpu_memory_utilization=0.5)
    eng = llm.engine
    graphs = eng.runner.graphs
    if graphs is None:
        raise SystemExit("graph_replay_time: CUDA graphs are off (no GPU, or TITANINFER_NO_CUDA_GRAPHS)")
    bs = set_decode_inputs(graphs, args.batch, args.context, eng.runner.num_blocks)
    step_s = replay_us(graphs.graphs[graphs.key_for(bs, args.context + 1)], args.iters) / 1e6
    cost = ModelCost.from_config(eng.model_config, torch.finfo(torch.bfloat16).bits // 8)
    sc = step_cost(cost, [Chunk(1, args.context)] * bs)
    ceil = get_ceilings("cuda")
    floor_s = max(sc.bytes / ceil.bw_bytes_per_s, sc.flops / ceil.flops_per_s)
    print(f"{args.model} batch {bs} context {args.context}: {step_s * 1e6:.1f} us per replay, "
          f"floor {floor_s * 1e6:.1f} us ({sc.bytes / 1e9:.3f} GB at {ceil.bw_bytes_per_s / 1e12:.2f} TB/s), "
          f"device sol {floor_s / step_s:.3f}")


if __name__ == "__main__":
    main()
