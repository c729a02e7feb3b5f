"""Hugging Face transformers as a bench peer, on the same weights as TitanInfer.

    latency  `model.generate` with a static KV cache, one request at a time; a streamer
             timestamps every token (after a device sync, so times are real).
    offline  engine "hf": transformers' continuous batching manager (the engine behind
             `generate_batch`) with per-request `max_new_tokens`; per-token timestamps from
             the manager. Where continuous batching is missing or fails, padded batched
             `generate` is used instead and the run says so in its notes.
             engine "hf-generate": padded batched `generate` by choice (batches of
             max_num_seqs, left-padded, dynamic cache, each batch runs to its longest output).

Times use time.perf_counter (transformers' own request timestamps use it too).
EOS is ignored through `min_new_tokens` (generate) or eos_token_id = -1 (continuous batching).
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import logging
import time
from typing import Any

import torch
from tqdm import tqdm

from titaninfer.bench.engines.base import EngineRun
from titaninfer.bench.metrics import EngineStatsSummary, RequestRecord
from titaninfer.bench.workloads import BenchRequest, Workload


class _TokenClock:
    """A generate() streamer that only timestamps: the first put() is the prompt."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _accepted(fn: Any, kwargs: dict) -> dict:
    """The subset of kwargs `fn` accepts: transformers' CB API moves between releases."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


class HFEngine:
    def __init__(self, model: Any, device: str, dtype: torch.dtype, max_num_seqs: int,
                 max_num_batched_tokens: int, pad_token_id: int, name: str = "hf") -> None:
        if name not in ("hf", "hf-generate"):
            raise ValueError(f"unknown hf engine variant {name!r}")
        self.name = name
        self.model: Any = model  # a transformers PreTrainedModel
        self.device = device
        self.dtype = dtype
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.pad_token_id = pad_token_id
        self.notes: list[str] = []
        self.cb_settings: dict[str, Any] = {}
        # transformers' continuous batching logs psutil/memory complaints on CPU hosts at
        # ERROR level though nothing is wrong; real failures surface as exceptions.
        logging.getLogger("ContinuousBatchingLogger").setLevel(logging.CRITICAL)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    # ------------------------------------------------------------------ latency
    def _generate_one(self, req: BenchRequest, ignore_eos: bool, t0: float) -> RequestRecord:
        ids = torch.tensor([req.prompt_ids], device=self.device)
        clock = _TokenClock(self.device)
        extra = {"min_new_tokens": req.output_len} if ignore_eos else {}
        arrival = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=req.output_len,
                                      do_sample=False, cache_implementation="static", streamer=clock,
                                      pad_token_id=self.pad_token_id, **extra)
        self._sync()
        finish = time.perf_counter()
        n = out.shape[1] - ids.shape[1]
        times = clock.times[:n]
        return RequestRecord(req.index, req.prompt_len, n, arrival - t0,
                             (times[0] - t0) if times else None, finish - t0, [t - t0 for t in times],
                             "length" if n == req.output_len else "stop")

    def _run_latency(self, workload: Workload, progress: bool) -> tuple[list[RequestRecord], float]:
        # Warm up with the first request's own lengths: the static cache (and the graph that
        # transformers compiles for it) is sized by prompt + max_new_tokens, so a shorter
        # warm-up would leave the compile inside the timed run.
        warm = workload.requests[0]
        self._generate_one(BenchRequest(-1, warm.prompt_ids, warm.output_len), True, 0.0)
        t0 = time.perf_counter()
        records = [self._generate_one(r, workload.spec.ignore_eos, t0)
                   for r in tqdm(workload.requests, desc="hf latency", unit="req", disable=not progress)]
        return records, max(r.finish_s or 0.0 for r in records)

    # ------------------------------------------------------------------ offline: continuous batching
    def _cb_config(self, workload: Workload) -> Any:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)} \
            if dataclasses.is_dataclass(ContinuousBatchingConfig) else set(
                inspect.signature(ContinuousBatchingConfig).parameters)
        want: dict[str, Any] = {"max_batch_tokens": self.max_num_batched_tokens,
                                "max_requests_per_batch": self.max_num_seqs}
        if not self.device.startswith("cuda"):
            # On a CPU the default sizes the cache from host RAM (tens of GB zeroed up front):
            # size it for this workload instead.
            page = 64
            need = sum(-(-(r.prompt_len + r.output_len) // page) for r in workload.requests)
            want.update(page_size=page, num_blocks=need + 8)
        kwargs = {k: v for k, v in want.items() if k in fields}
        self.cb_settings = kwargs
        return ContinuousBatchingConfig(**kwargs)

    def _run_cb(self, workload: Workload, progress: bool) -> tuple[list[RequestRecord], float]:
        from transformers import GenerationConfig

        reqs = workload.requests
        gen = GenerationConfig(max_new_tokens=max(r.output_len for r in reqs), do_sample=False,
                               pad_token_id=self.pad_token_id,
                               eos_token_id=-1 if workload.spec.ignore_eos else self.model.config.eos_token_id)
        init_kw = _accepted(self.model.init_continuous_batching,
                            {"generation_config": gen, "continuous_batching_config": self._cb_config(workload)})
        manager = self.model.init_continuous_batching(**init_kw)
        if hasattr(manager, "warmup") and not getattr(manager, "warmed_up", False):
            manager.warmup()
        manager.start()
        results: dict[str, Any] = {}
        bar = tqdm(total=len(reqs), desc="hf offline (continuous batching)", unit="req", disable=not progress)
        try:
            t0 = time.perf_counter()
            for r in reqs:
                manager.add_request(**_accepted(manager.add_request, dict(
                    input_ids=r.prompt_ids, request_id=f"r{r.index}", max_new_tokens=r.output_len,
                    record_timestamps=True)))
            while len(results) < len(reqs):
                res = manager.get_result(timeout=1)
                if res is None:
                    if not manager.is_running():
                        raise RuntimeError("transformers' continuous batching thread stopped")
                    continue
                if res.is_finished():
                    results[res.request_id] = (res, time.perf_counter())
                    bar.update(1)
        finally:
            bar.close()
            manager.stop(**_accepted(manager.stop, {"block": True, "timeout": 10}))
            if hasattr(self.model, "destroy_cached_continuous_batching_manager"):
                self.model.destroy_cached_continuous_batching_manager()
        records = []
        for r in reqs:
            res, seen = results[f"r{r.index}"]
            stamps = list(getattr(res, "timestamps", None) or [])
            end = res.lifespan[1] if getattr(res, "lifespan", (-1, -1))[1] > 0 else seen
            created = getattr(res, "created_time", t0)
            records.append(RequestRecord(
                r.index, r.prompt_len, len(res.generated_tokens), created - t0,
                (stamps[0] - t0) if stamps else None, end - t0, [s - t0 for s in stamps],
                "length" if len(res.generated_tokens) >= r.output_len else "stop",
                error=getattr(res, "error", None)))
        return records, max(r.finish_s or 0.0 for r in records)

    # ------------------------------------------------------------------ offline: padded fallback
    def _run_padded(self, workload: Workload, progress: bool) -> tuple[list[RequestRecord], float]:
        reqs = workload.requests
        records: list[RequestRecord] = []
        bs = self.max_num_seqs
        t0 = time.perf_counter()
        for s in tqdm(range(0, len(reqs), bs), desc=f"{self.name} offline (padded generate)", unit="batch",
                      disable=not progress):
            batch = reqs[s:s + bs]
            width = max(r.prompt_len for r in batch)
            ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(batch):  # left padding: every row ends at the same column
                ids[i, width - r.prompt_len:] = torch.tensor(r.prompt_ids)
                mask[i, width - r.prompt_len:] = 1
            n = max(r.output_len for r in batch)
            clock = _TokenClock(self.device)
            with torch.inference_mode():
                self.model.generate(ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=n,
                                    min_new_tokens=n, do_sample=False, streamer=clock,
                                    pad_token_id=self.pad_token_id)
            for r in batch:
                times = [t - t0 for t in clock.times[:r.output_len]]
                records.append(RequestRecord(r.index, r.prompt_len, len(times), 0.0, times[0] if times else None,
                                             times[-1] if times else None, times, "length"))
        return records, max(r.finish_s or 0.0 for r in records)

    # ------------------------------------------------------------------ run
    def run(self, workload: Workload, mode: str, progress: bool) -> EngineRun:
        if mode == "serve":
            raise ValueError("the hf engine runs `latency` and `offline`; use `openai` for serving")
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        notes: list[str] = []
        cfg: dict[str, Any] = {"transformers": _tf_version(), "dtype": str(self.dtype).removeprefix("torch."),
                               "attn_implementation": getattr(self.model.config, "_attn_implementation", None)}
        if mode == "latency":
            records, duration = self._run_latency(workload, progress)
            cfg["method"] = "generate(cache_implementation='static'), batch 1"
        elif self.name == "hf-generate":
            warm = dataclasses.replace(workload, requests=[
                BenchRequest(i, r.prompt_ids[:64], 4) for i, r in enumerate(workload.requests[:2])])
            self._run_padded(warm, False)
            records, duration = self._run_padded(workload, progress)
            cfg["method"] = f"padded batched generate, batch {self.max_num_seqs}, dynamic cache"
        else:
            try:
                if not hasattr(self.model, "init_continuous_batching"):
                    raise AttributeError("this transformers has no continuous batching")
                # The manager's own warmup() (forward passes, CUDA graph capture) runs before
                # t = 0; a separate warm-up run would pay that (~30 s on a GPU) twice.
                records, duration = self._run_cb(workload, progress)
                cfg["method"] = "continuous batching (init_continuous_batching / generate_batch engine)"
                cfg["continuous_batching_config"] = self.cb_settings
                if any(not r.token_times_s for r in records):
                    notes.append("hf: this transformers records no per-token timestamps: TTFT/ITL unavailable")
            except Exception as e:  # noqa: BLE001 - any failure of the CB path means: fall back
                notes.append(f"hf: continuous batching unavailable ({type(e).__name__}: {e}); "
                             f"FELL BACK to padded batched generate (batches of {self.max_num_seqs}, "
                             "each runs to its longest output)")
                gc.collect()
                records, duration = self._run_padded(workload, progress)
                cfg["method"] = f"padded batched generate, batch {self.max_num_seqs} (fallback)"
        stats = EngineStatsSummary(
            gpu_mem_peak_bytes=torch.cuda.max_memory_allocated() if self.device.startswith("cuda") else None)
        return EngineRun(self.name, mode, records, duration, stats, steps=None, config=cfg, notes=notes)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _tf_version() -> str:
    import transformers

    return transformers.__version__
