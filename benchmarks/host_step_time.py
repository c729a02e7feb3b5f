"""Host (Python) time per engine step at a large batch, with a model so small that its
compute is negligible: schedule + output processing for 256 decoding requests, on a CPU.

    python benchmarks/host_step_time.py [-n 256] [--steps 100] [--final-only] [--stub-model]

--stub-model replaces the forward pass with zero logits over 8 tokens, so the step time is
host work alone: scheduling, the runner's batch build and sampler inputs, output processing.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from titaninfer import LLM, SamplingParams

TINY_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 151936, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--final-only", action="store_true", help="as LLM.generate steps the engine")
    ap.add_argument("--stub-model", action="store_true", help="no forward pass: host work only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "config.json")
        with open(cfg, "w") as f:
            json.dump(TINY_QWEN3, f)
        llm = LLM(f"dummy:{cfg}", device="cpu", kv_cache_bytes=1 << 30, max_num_seqs=args.n,
                  max_num_batched_tokens=8192)
    eng = llm.engine
    rng = np.random.default_rng(0)
    for i in range(args.n):
        eng.add_request(rng.integers(100, 150000, int(rng.integers(100, 600))).tolist(),
                        SamplingParams(temperature=0.0, max_tokens=args.steps + 400, ignore_eos=True),
                        request_id=f"r{i}")
    while eng.scheduler.waiting or any(not r.output_token_ids for r in eng.scheduler.running):
        eng.step()  # finish the prefills
    spent = {"schedule": 0.0, "process": 0.0}
    schedule, process = eng.scheduler.schedule, eng._process

    def timed_schedule():
        t0 = time.perf_counter()
        try:
            return schedule()
        finally:
            spent["schedule"] += time.perf_counter() - t0

    def timed_process(sched, result, final_only=False):
        t0 = time.perf_counter()
        try:
            return process(sched, result, final_only)
        finally:
            spent["process"] += time.perf_counter() - t0

    eng.scheduler.schedule, eng._process = timed_schedule, timed_process
    if args.stub_model:
        eng.runner._forward = lambda hb: torch.zeros((len(hb.sample_rows), 8))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        eng.step(final_only=args.final_only)
    per = 1e3 / args.steps
    print(f"{args.n} decoding requests: step {(time.perf_counter() - t0) * per:.2f} ms "
          f"(model included), schedule {spent['schedule'] * per:.2f} ms, "
          f"process {spent['process'] * per:.2f} ms")


if __name__ == "__main__":
    main()
