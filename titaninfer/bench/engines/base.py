"""What every bench engine (TitanInfer in-process, Hugging Face, an OpenAI endpoint) returns.

Run modes:
    latency  requests one at a time (batch of one), each waits for the previous to finish
    offline  every request submitted at t = 0, the engine batches as it likes
    serve    requests submitted at their arrival offsets (Poisson), at most
             `max_concurrency` in flight, tokens streamed

Invariant: `EngineRun.records` has one record per workload request, in workload order, with
times relative to the run's t = 0; warm-up work is never inside [0, duration_s].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from titaninfer.bench.metrics import EngineStatsSummary, RequestRecord
from titaninfer.bench.sol import Step
from titaninfer.bench.workloads import Workload

MODES = ("latency", "offline", "serve")


@dataclass
class StepTiming:
    """One engine step that ran: its chunks and the wall time of the engine call around it."""

    chunks: Step
    wall_s: float


@dataclass
class EngineRun:
    engine: str
    mode: str
    records: list[RequestRecord]
    duration_s: float
    stats: EngineStatsSummary
    steps: list[StepTiming] | None = None  # recorded from the engine; None: reconstruct
    config: dict = field(default_factory=dict)  # engine-specific settings, for the manifest
    notes: list[str] = field(default_factory=list)


class BenchEngine(Protocol):
    name: str

    def run(self, workload: Workload, mode: str, progress: bool) -> EngineRun:
        """Warm up (outside the timed window), then run `workload` in `mode`."""
        ...

    def close(self) -> None:
        """Release device memory (KV cache, graphs) so the next engine has the device."""
        ...
