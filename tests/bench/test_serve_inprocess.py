"""`bench serve --engines titaninfer`: the in-process engine admits requests at their
Poisson arrival offsets, under the concurrency cap (tiny dummy model: fast)."""

from __future__ import annotations

import json
import os

import pytest

from titaninfer.bench.workloads import apply_overrides, get_workload, materialize
from titaninfer.cli import main

TINY = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=512, hidden_size=64,
            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2)


def test_inprocess_serve_follows_arrivals(tmp_path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(TINY))
    out = str(tmp_path / "pack")
    argv = ["bench", "serve", "--engines", "titaninfer", "--model", f"dummy:{cfg}", "-n", "6",
            "--input-len", "8", "--output-len", "3", "--request-rate", "20", "--max-concurrency", "2",
            "--no-sol", "--no-progress", "--device", "cpu", "--out", out]
    assert main(argv) == 0
    with open(os.path.join(out, "requests.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    spec = apply_overrides(get_workload("serving-sharegpt-like"), num_requests=6, input_len=8, output_len=3,
                           request_rate=20.0, max_concurrency=2)
    planned = [r.arrival_offset_s for r in materialize(spec, 512, 256).requests]
    for rec, t in zip(recs, planned, strict=True):
        assert rec["output_len"] == 3 and rec["error"] is None
        assert rec["arrival_s"] >= t - 1e-3  # never admitted before it arrives
    # At most 2 in flight: at any admission, fewer than 2 earlier requests are unfinished.
    for rec in recs:
        busy = [o for o in recs if o["arrival_s"] < rec["arrival_s"] and o["finish_s"] > rec["arrival_s"]]
        assert len(busy) <= 1
    assert recs[0]["arrival_s"] == pytest.approx(0.0, abs=0.05)
