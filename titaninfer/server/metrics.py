"""Prometheus metrics, in a registry owned by one app (never prometheus-client's global one,
so several apps in one process, as in tests, do not collide).

Engine-side numbers (running / waiting sequences, KV blocks, prefix hit rate, token and
preemption counters) are read from the engine's latest stats snapshot at scrape time by a
custom collector; they are the engine's own counters, so nothing can drift. Per-request
latencies (TTFT, time per output token, end-to-end) are histograms observed by the server
when a request ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from titaninfer.engine.engine import EngineStats
from titaninfer.types import RequestMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class _EngineCollector(Collector):
    def __init__(self, stats: Callable[[], EngineStats], in_flight: Callable[[], int]) -> None:
        self._stats = stats
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield GaugeMetricFamily("titaninfer_num_requests_running",
                                "Sequences in the engine's running batch.", value=s.num_running)
        yield GaugeMetricFamily("titaninfer_num_requests_waiting",
                                "Sequences waiting to be scheduled.", value=s.num_waiting)
        yield GaugeMetricFamily("titaninfer_kv_blocks_used", "KV cache blocks in use.",
                                value=s.kv_blocks_used)
        yield GaugeMetricFamily("titaninfer_kv_blocks_total", "KV cache blocks in the pool.",
                                value=s.kv_blocks_total)
        yield GaugeMetricFamily("titaninfer_kv_cache_usage_ratio",
                                "Fraction of KV cache blocks in use.", value=s.kv_usage)
        yield GaugeMetricFamily("titaninfer_prefix_cache_hit_rate",
                                "Prompt tokens served from the prefix cache / prompt tokens scheduled.",
                                value=s.prefix_hit_rate)
        yield GaugeMetricFamily("titaninfer_server_requests_in_flight",
                                "HTTP requests being served.", value=self._in_flight())
        yield CounterMetricFamily("titaninfer_prompt_tokens", "Prompt tokens received.",
                                  value=s.prompt_tokens)
        yield CounterMetricFamily("titaninfer_generation_tokens", "Tokens generated.",
                                  value=s.generation_tokens)
        yield CounterMetricFamily("titaninfer_num_preemptions", "Sequences preempted.",
                                  value=s.num_preemptions)


class ServerMetrics:
    def __init__(self, stats: Callable[[], EngineStats], in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("titaninfer_time_to_first_token_seconds",
                              "Time from arrival to the first generated token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("titaninfer_time_per_output_token_seconds",
                              "Mean time between output tokens of a request, after the first.",
                              buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("titaninfer_e2e_request_latency_seconds",
                             "Time from arrival to the last token.", buckets=_LATENCY_BUCKETS, registry=r)
        self.finished = Counter("titaninfer_requests_finished", "Engine requests finished, by reason.",
                                ["finish_reason"], registry=r)
        self.http = Counter("titaninfer_http_requests", "HTTP responses, by route and status.",
                            ["route", "status"], registry=r)
        r.register(_EngineCollector(stats, in_flight))

    def observe_request(self, m: RequestMetrics | None, finish_reasons: list[str]) -> None:
        for reason in finish_reasons:
            self.finished.labels(reason).inc()
        if m is None:
            return
        if m.first_token_time is not None:
            self.ttft.observe(max(0.0, m.first_token_time - m.arrival_time))
            if len(m.token_times) > 1:
                span = m.token_times[-1] - m.first_token_time
                self.tpot.observe(max(0.0, span / (len(m.token_times) - 1)))
        if m.finished_time is not None:
            self.e2e.observe(max(0.0, m.finished_time - m.arrival_time))

    def render(self) -> bytes:
        return generate_latest(self.registry)
