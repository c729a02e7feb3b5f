"""TitanInfer in-process: drives `LLMEngine.step()` directly, no HTTP in between.

The steps that actually ran are recorded by wrapping `engine.scheduler.schedule` (the
scheduler emits one SchedulerOutput per step: its chunks are exactly the (new tokens,
context length) pairs the speed-of-light floor needs). The wrapper only reads the output,
so the engine's behaviour is unchanged; it is removed when the run ends.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from titaninfer.bench.engines.base import EngineRun, StepTiming
from titaninfer.bench.metrics import EngineStatsSummary, RequestRecord
from titaninfer.bench.sol import Chunk
from titaninfer.bench.workloads import BenchRequest, Workload
from titaninfer.kernels.compile_watch import late_compiles
from titaninfer.loader import LoadedModel
from titaninfer.types import RequestOutput, SamplingParams


class _StepRecorder:
    """Records the chunks of every non-empty scheduled step."""

    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        self.scheduler = engine.scheduler
        self._orig: Callable = self.scheduler.schedule
        self.pending: list[Chunk] | None = None
        self.scheduler.schedule = self._schedule

    def _schedule(self):  # type: ignore[no-untyped-def]
        out = self._orig()
        if out.chunks:
            self.pending = [Chunk(len(c.token_ids), c.start_pos, c.sample) for c in out.chunks]
        return out

    def take(self) -> list[Chunk] | None:
        chunks, self.pending = self.pending, None
        return chunks

    def close(self) -> None:
        # Deleting the instance attribute restores the class's method.
        if self.scheduler.__dict__.get("schedule") == self._schedule:
            del self.scheduler.schedule


class TitanInferEngine:
    name = "titaninfer"

    def __init__(self, model: str | None, engine_kwargs: dict) -> None:
        from titaninfer.engine import LLMEngine

        self.engine = LLMEngine.from_args(model, **engine_kwargs)
        self.loaded: LoadedModel | None = self.engine.loaded  # None after close()
        self.model_config = self.engine.model_config
        self.device = self.engine.config.device
        self.dtype = self.engine.config.dtype

    # ------------------------------------------------------------------ helpers
    def _params(self, output_len: int, ignore_eos: bool) -> SamplingParams:
        return SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=ignore_eos)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def _warmup(self, workload: Workload, one_at_a_time: bool) -> None:
        """A few short requests on fresh random ids (no prefix overlap with the workload):
        first-call costs (allocator, cuBLAS heuristics for a new GEMM shape, graph capture)
        stay out of the run. one_at_a_time (latency mode): each alone, so the prefill has the
        run's own shape, not that of a batch of them."""
        rng = np.random.default_rng(12345)
        vocab = self.model_config.vocab_size
        n = min(4, len(workload.requests))
        plen = min(max(r.prompt_len for r in workload.requests), 256)
        for _ in range(n):
            ids = rng.integers(min(100, vocab // 2), vocab, plen).tolist()
            self.engine.add_request(ids, self._params(4, True))
            if one_at_a_time:
                self._drain()
        self._drain()
        self._sync()

    def _drain(self) -> None:
        while self.engine.has_unfinished_requests():
            self.engine.step()

    def _record(self, out: RequestOutput, req: BenchRequest, t0: float) -> RequestRecord:
        m = out.metrics
        comp = out.outputs[0]
        assert m is not None
        return RequestRecord(
            index=req.index, prompt_len=req.prompt_len, output_len=len(comp.token_ids),
            arrival_s=m.arrival_time - t0,
            first_token_s=None if m.first_token_time is None else m.first_token_time - t0,
            finish_s=None if m.finished_time is None else m.finished_time - t0,
            token_times_s=[t - t0 for t in m.token_times], finish_reason=comp.finish_reason,
            num_cached_tokens=m.num_cached_tokens)

    # ------------------------------------------------------------------ run
    def run(self, workload: Workload, mode: str, progress: bool) -> EngineRun:
        eng = self.engine
        self._warmup(workload, one_at_a_time=mode == "latency")
        before = eng.stats()
        compiles_before = len(late_compiles())
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        recorder = _StepRecorder(eng)
        steps: list[StepTiming] = []
        kv_peak = 0.0
        by_id = {f"bench-{r.index}": r for r in workload.requests}
        records: dict[int, RequestRecord] = {}
        pending = sorted(workload.requests, key=lambda r: r.arrival_offset_s)
        limit = workload.spec.max_concurrency or len(pending)
        if mode == "latency":
            limit = 1
        # Counted in tokens (one per changed request per step) so long runs show progress
        # before the first request finishes.
        bar = tqdm(total=workload.total_output_tokens, desc=f"titaninfer {mode}", unit="tok", disable=not progress)
        t0 = time.monotonic()
        try:
            while pending or eng.has_unfinished_requests():
                now = time.monotonic()
                # Admit what has arrived (offline: everything at t0), within the concurrency cap.
                while pending and eng.num_unfinished_requests < limit and \
                        (mode != "serve" or t0 + pending[0].arrival_offset_s <= now):
                    r = pending.pop(0)
                    eng.add_request(r.prompt_ids, self._params(r.output_len, workload.spec.ignore_eos),
                                    request_id=f"bench-{r.index}", arrival_time=t0 if mode == "offline" else now)
                if not eng.has_unfinished_requests():
                    time.sleep(max(0.0, t0 + pending[0].arrival_offset_s - time.monotonic()))
                    continue
                ts = time.perf_counter()
                outs = eng.step(final_only=True)  # as LLM.generate; token times come from metrics
                wall = time.perf_counter() - ts
                chunks = recorder.take()
                if chunks:
                    steps.append(StepTiming(chunks, wall))
                kv_peak = max(kv_peak, eng.kv.num_used_blocks / max(1, eng.kv.num_blocks))
                bar.update(len(outs))
                for o in outs:
                    if o.finished and o.request_id in by_id:
                        req = by_id[o.request_id]
                        records[req.index] = self._record(o, req, t0)
                        bar.set_postfix(done=f"{len(records)}/{len(workload.requests)}", refresh=False)
            self._sync()
            duration = max((r.finish_s or 0.0) for r in records.values()) if records else time.monotonic() - t0
        finally:
            recorder.close()
            bar.close()
        after = eng.stats()
        q = after.prefix_query_tokens - before.prefix_query_tokens
        stats = EngineStatsSummary(
            gpu_mem_peak_bytes=torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else None,
            kv_blocks_total=after.kv_blocks_total,
            kv_util_peak=kv_peak,
            prefix_hit_rate=(after.prefix_hit_tokens - before.prefix_hit_tokens) / q if q else 0.0,
            num_preemptions=after.num_preemptions - before.num_preemptions,
        )
        cfg = self.engine.config.to_dict()
        notes = [f"engine start-up (KV sizing, graphs): {getattr(eng, 'startup_s', 0.0):.2f} s"]
        compiled = late_compiles()[compiles_before:]
        if compiled:  # each stalled a step while the GPU idled: the run's figures include that
            kernels = sorted({c.split("[", 1)[0] for c in compiled})
            notes.append(f"WARNING: {len(compiled)} Triton kernel variants compiled during the timed run "
                         f"(each stalls its step): {', '.join(kernels)}")
        return EngineRun(self.name, mode, [records[r.index] for r in workload.requests], duration, stats,
                         steps=steps, config=cfg, notes=notes)

    def release_engine(self) -> None:
        """Free the KV cache and graphs but keep the weights (`self.loaded`), so another
        engine can run on the same tensors."""
        self.engine = None  # type: ignore[assignment]
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.release_engine()
        self.loaded = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
