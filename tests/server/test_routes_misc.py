"""/health, /version, /tokenize, /detokenize and /metrics on the shared server."""

from __future__ import annotations

from typing import Any

import httpx

import titaninfer

from .helpers import ServerProcess, read_metrics, wait_idle

CHAT = [{"role": "user", "content": "Hello there"}]


def test_health_and_version(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/version").json() == {"version": titaninfer.__version__}


def test_tokenize_and_detokenize_match_the_tokenizer(http: httpx.Client, tokenizer: Any) -> None:
    r = http.post("/tokenize", json={"prompt": "Hello world"}).json()
    assert r["tokens"] == tokenizer.encode("Hello world") and r["count"] == len(r["tokens"])
    assert r["max_model_len"] == 8192
    r = http.post("/tokenize", json={"messages": CHAT}).json()
    assert r["tokens"] == tokenizer.encode_chat(CHAT)
    r = http.post("/tokenize", json={"messages": CHAT, "add_generation_prompt": False}).json()
    assert r["tokens"] == tokenizer.encode_chat(CHAT, add_generation_prompt=False)
    ids = tokenizer.encode("Round trip, please.", add_special_tokens=False)
    assert http.post("/detokenize", json={"tokens": ids}).json() == {"prompt": "Round trip, please."}


def test_metrics_follow_a_request(server: ServerProcess, http: httpx.Client) -> None:
    before = wait_idle(server.url)
    for name in ("titaninfer_num_requests_running", "titaninfer_num_requests_waiting",
                 "titaninfer_kv_blocks_used", "titaninfer_kv_blocks_total", "titaninfer_prefix_cache_hit_rate",
                 "titaninfer_prompt_tokens_total", "titaninfer_generation_tokens_total",
                 "titaninfer_num_preemptions_total", "titaninfer_time_to_first_token_seconds_count",
                 "titaninfer_time_per_output_token_seconds_count", "titaninfer_e2e_request_latency_seconds_count"):
        assert name in before, name
    assert before["titaninfer_kv_blocks_total"] > 0 and 0 <= before["titaninfer_prefix_cache_hit_rate"] <= 1
    r = http.post("/v1/completions", json={"prompt": "Metrics are", "max_tokens": 5, "temperature": 0,
                                           "ignore_eos": True}).json()
    after = wait_idle(server.url)
    assert after["titaninfer_prompt_tokens_total"] - before["titaninfer_prompt_tokens_total"] == r["usage"]["prompt_tokens"]
    assert after["titaninfer_generation_tokens_total"] - before["titaninfer_generation_tokens_total"] == 5
    for hist in ("time_to_first_token_seconds", "time_per_output_token_seconds", "e2e_request_latency_seconds"):
        assert after[f"titaninfer_{hist}_count"] == before[f"titaninfer_{hist}_count"] + 1, hist
    text = httpx.get(f"{server.url}/metrics").text
    assert 'titaninfer_http_requests_total{route="/v1/completions",status="200"}' in text
    assert 'titaninfer_requests_finished_total{finish_reason="length"}' in text


def test_metrics_are_per_server(server: ServerProcess) -> None:
    # Each app has its own registry: no default process/python collectors leak in.
    assert "process_cpu_seconds_total" not in read_metrics(server.url)
