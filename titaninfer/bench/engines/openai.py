"""Any OpenAI-compatible server as a bench peer, through `serve_client` (HTTP streaming).

All three modes go through the same client: latency = concurrency 1, offline = everything
sent at t = 0 (bounded by --max-concurrency), serve = arrival offsets + concurrency bound.
The server's internals (KV blocks, preemptions) are unknown here: those metrics are None.
"""

from __future__ import annotations

import asyncio
import dataclasses

from titaninfer.bench.engines.base import EngineRun
from titaninfer.bench.metrics import EngineStatsSummary
from titaninfer.bench.serve_client import ClientConfig, EndpointError, run_requests
from titaninfer.bench.workloads import Workload


class OpenAIEngine:
    name = "openai"

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg

    def run(self, workload: Workload, mode: str, progress: bool) -> EngineRun:
        cfg = dataclasses.replace(self.cfg, ignore_eos=workload.spec.ignore_eos,
                                  max_concurrency=1 if mode == "latency" else workload.spec.max_concurrency)
        reqs = workload.requests
        if mode != "serve":  # arrivals matter only when serving
            reqs = [dataclasses.replace(r, arrival_offset_s=0.0) for r in reqs]
        # Warm-up outside the timed window: one short request.
        warm = [dataclasses.replace(reqs[0], index=-1, output_len=min(4, reqs[0].output_len), arrival_offset_s=0.0)]
        asyncio.run(run_requests(cfg, warm))
        records, duration, model = asyncio.run(run_requests(cfg, reqs, progress))
        failed = [r for r in records if r.error]
        if len(failed) == len(records):
            raise EndpointError(f"every request to {cfg.endpoint} failed: {failed[0].error}")
        notes = [f"openai: {len(failed)} of {len(records)} requests failed, first: {failed[0].error}"] if failed else []
        if cfg.prompt_format == "text":
            notes.append("openai: text prompts: prompt lengths are approximate (words, not tokens)")
        config = {"endpoint": cfg.endpoint, "model": model, "prompt_format": cfg.prompt_format,
                  "max_concurrency": cfg.max_concurrency}
        return EngineRun(self.name, mode, records, duration, EngineStatsSummary(), config=config, notes=notes)

    def close(self) -> None:
        pass
