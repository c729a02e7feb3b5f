"""Where the time of one eager prefill goes: host (Python, launches) vs device.

Runs a single-request prefill (max_tokens=1) of --input-len random tokens several times
after a warm-up of the same shape and prints, per run, the wall time of `generate` and
the device time of the forward (CUDA events around the engine's runner call); then a
cProfile of one more run, top functions by own time, so that host overhead has names.

    python benchmarks/prefill_host_time.py --model dummy:llama3-8b --input-len 128
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np
import torch

from titaninfer import LLM, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dummy:tinyllama-1.1b")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    llm = LLM(args.model, max_num_seqs=8, gpu_memory_utilization=0.5)
    runner = llm.engine.runner
    vocab = llm.engine.model_config.vocab_size
    rng = np.random.default_rng(0)
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)

    device_ms: list[float] = []
    forward = runner._forward

    def timed_forward(hb):  # type: ignore[no-untyped-def]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = forward(hb)
        end.record()
        end.synchronize()
        device_ms.append(start.elapsed_time(end))
        return out

    def one() -> float:
        ids = rng.integers(100, vocab, args.input_len).tolist()
        t0 = time.perf_counter()
        llm.generate([ids], params)
        return (time.perf_counter() - t0) * 1e3

    for _ in range(3):
        one()
    runner._forward = timed_forward
    for i in range(args.runs):
        device_ms.clear()
        wall = one()
        print(f"run {i}: generate {wall:.2f} ms wall, forward device {sum(device_ms):.2f} ms "
              f"(enqueue-to-done of the prefill step)")
    runner._forward = forward
    prof = cProfile.Profile()
    prof.enable()
    wall = one()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
    print(f"profiled run: {wall:.2f} ms wall\n{out.getvalue()}")


if __name__ == "__main__":
    main()
