"""Per-request records and the normalized metrics of BENCHMARKS.md.

Every engine runner returns `RequestRecord`s with times in seconds relative to the start
of its measured run (t = 0 when the first request is submitted); `compute_metrics` reduces
them to exactly the names in `METRIC_NAMES` (a value is None where the engine cannot
report it, e.g. KV blocks of an external endpoint, GPU memory on a CPU).

Definitions (per request, over requests that finished without error):
    ttft  = first_token - arrival
    e2e   = finish - arrival
    tpot  = (e2e - ttft) / (output_tokens - 1)     requests with >= 2 output tokens
    itl   = every gap between consecutive tokens, pooled over requests
Throughput divides by the run's wall time `duration_s` (first submit to last finish).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

METRIC_NAMES: tuple[str, ...] = (
    "output_tok_per_s", "total_tok_per_s", "req_per_s",
    "ttft_s_p50", "ttft_s_p90", "ttft_s_p99",
    "tpot_s_p50", "tpot_s_p90", "tpot_s_p99",
    "itl_s_p50", "itl_s_p90", "itl_s_p99",
    "e2e_s_p50", "e2e_s_p99",
    "gpu_mem_peak_bytes", "kv_blocks_total", "kv_util_peak", "prefix_hit_rate", "num_preemptions",
    "speed_of_light_s", "sol_ratio",
)

# For the gate: which direction is better. Counters (preemptions) count as lower-is-better.
HIGHER_IS_BETTER = frozenset({"output_tok_per_s", "total_tok_per_s", "req_per_s", "prefix_hit_rate", "sol_ratio"})
# Facts of the run rather than of its quality: reported, never gated.
NOT_GATED = frozenset({"kv_blocks_total", "speed_of_light_s", "kv_util_peak"})


@dataclass
class RequestRecord:
    index: int
    prompt_len: int
    output_len: int  # tokens actually generated
    arrival_s: float
    first_token_s: float | None = None
    finish_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)  # one per output token (or chunk)
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish_s is not None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.arrival_s

    @property
    def itl_s(self) -> list[float]:
        t = self.token_times_s
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.output_len < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_len - 1)

    def to_json(self, engine: str) -> dict:
        d = asdict(self)
        d.pop("token_times_s")
        return {"engine": engine, **d, "ttft_s": self.ttft_s, "e2e_s": self.e2e_s, "tpot_s": self.tpot_s,
                "itl_s": [round(x, 7) for x in self.itl_s]}


@dataclass
class EngineStatsSummary:
    """What an engine can tell about itself beyond request timings (None: unknown)."""

    gpu_mem_peak_bytes: int | None = None
    kv_blocks_total: int | None = None
    kv_util_peak: float | None = None
    prefix_hit_rate: float | None = None
    num_preemptions: int | None = None


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def compute_metrics(records: list[RequestRecord], duration_s: float, stats: EngineStatsSummary,
                    speed_of_light_s: float | None) -> dict[str, float | int | None]:
    ok = [r for r in records if r.ok]
    out_tok = sum(r.output_len for r in ok)
    in_tok = sum(r.prompt_len for r in ok)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    itl = [g for r in ok for g in r.itl_s]
    e2e = [r.e2e_s for r in ok if r.e2e_s is not None]
    m: dict[str, float | int | None] = {
        "output_tok_per_s": out_tok / duration_s if duration_s > 0 else None,
        "total_tok_per_s": (out_tok + in_tok) / duration_s if duration_s > 0 else None,
        "req_per_s": len(ok) / duration_s if duration_s > 0 else None,
    }
    for name, vals, qs in (("ttft_s", ttft, (50, 90, 99)), ("tpot_s", tpot, (50, 90, 99)),
                           ("itl_s", itl, (50, 90, 99)), ("e2e_s", e2e, (50, 99))):
        for q in qs:
            m[f"{name}_p{q}"] = percentile(vals, q)  # type: ignore[arg-type]
    m.update(asdict(stats))
    m["speed_of_light_s"] = speed_of_light_s
    m["sol_ratio"] = speed_of_light_s / duration_s if speed_of_light_s is not None and duration_s > 0 else None
    assert tuple(m) == METRIC_NAMES, "metric names drifted from BENCHMARKS.md"
    return m
