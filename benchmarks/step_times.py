"""Per-step wall time of the offline-random workload, split into host (schedule + launch +
process) and device-synchronised time: finds steps that are slow and says what they held.

    python benchmarks/step_times.py --model dummy:qwen3-0.6b -n 256 [--steps 80] [--sync]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from titaninfer import LLM, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dummy:qwen3-0.6b")
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--sync", action="store_true", help="synchronise after each step (device time)")
    ap.add_argument("--no-prefix-caching", action="store_true")
    ap.add_argument("--enforce-eager", action="store_true")
    args = ap.parse_args()
    llm = LLM(args.model, enable_prefix_caching=not args.no_prefix_caching, enforce_eager=args.enforce_eager)
    eng = llm.engine
    vocab = eng.model_config.vocab_size
    rng = np.random.default_rng(0)
    plens = rng.integers(100, 1025, args.n)
    olens = rng.integers(100, 1025, args.n)
    for i, (p, o) in enumerate(zip(plens, olens, strict=True)):
        eng.add_request(rng.integers(100, vocab, int(p)).tolist(),
                        SamplingParams(temperature=0.0, max_tokens=int(o), ignore_eos=True), request_id=f"r{i}")
    orig = eng.scheduler.schedule
    seen: list[tuple[int, int]] = []

    def schedule():  # record each step's shape: (prefill tokens, decode rows)
        s = orig()
        seen.append((sum(len(c.token_ids) for c in s.chunks if len(c.token_ids) > 1),
                     sum(1 for c in s.chunks if len(c.token_ids) == 1)))
        return s

    eng.scheduler.schedule = schedule
    rows = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        eng.step()
        t1 = time.perf_counter()
        if args.sync:
            torch.cuda.synchronize()
        rows.append((t1 - t0, time.perf_counter() - t0))
    print(f"{'step':>4} {'prefill_tok':>11} {'decodes':>7} {'host_ms':>8} {'wall_ms':>8}")
    for i, ((h, w), (pt, nd)) in enumerate(zip(rows, seen, strict=False)):
        print(f"{i:>4} {pt:>11} {nd:>7} {h * 1e3:>8.2f} {w * 1e3:>8.2f}")


if __name__ == "__main__":
    main()
