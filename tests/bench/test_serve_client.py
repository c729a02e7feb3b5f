"""`bench serve` against a stub endpoint that streams known tokens at known times: the
recorded TTFT and inter-token gaps recover those times."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from titaninfer.bench.serve_client import ids_to_text, normalize_endpoint
from titaninfer.cli import main

from .stub_server import ITL_S, TTFT_S, StubServer

TOL_S = 0.04  # a busy 2-core CI box delays the event loops a little


def _requests(path: str) -> list[dict]:
    with open(os.path.join(path, "requests.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_serve_recovers_stub_timing(tmp_path, capsys) -> None:
    out = str(tmp_path / "pack")
    with StubServer() as stub:
        rc = main(["bench", "serve", "--endpoint", stub.url + "/v1", "-n", "6", "--input-len", "8",
                   "--output-len", "5", "--request-rate", "40", "--max-concurrency", "2", "--no-sol",
                   "--no-progress", "--out", out])
    assert rc == 0
    reqs = [r for r in _requests(out) if r["engine"] == "openai"]
    assert len(reqs) == 6 and all(r["error"] is None for r in reqs)
    assert all(r["output_len"] == 5 and r["finish_reason"] == "length" for r in reqs)
    ttft = [r["ttft_s"] for r in reqs]
    itl = [g for r in reqs for g in r["itl_s"]]
    assert len(itl) == 6 * 4
    assert np.median(ttft) == pytest.approx(TTFT_S, abs=TOL_S)
    assert np.median(itl) == pytest.approx(ITL_S, abs=TOL_S)
    assert min(ttft) >= TTFT_S - 0.005 and min(itl) >= ITL_S - 0.005  # never earlier than sent
    e2e = [r["e2e_s"] for r in reqs]
    assert np.median(e2e) == pytest.approx(TTFT_S + 4 * ITL_S, abs=2 * TOL_S)
    # The client kept its concurrency bound, sent token ids, asked to ignore EOS.
    bodies = [b for b in stub.bodies if b["max_tokens"] == 5]
    assert stub.max_in_flight <= 2
    assert all(isinstance(b["prompt"], list) and len(b["prompt"]) == 8 for b in bodies)
    assert all(b["stream"] and b["ignore_eos"] and b["model"] == "stub-model" for b in bodies)
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)["openai"]
    assert m["ttft_s_p50"] == pytest.approx(TTFT_S, abs=TOL_S)
    assert m["itl_s_p50"] == pytest.approx(ITL_S, abs=TOL_S)
    assert m["kv_blocks_total"] is None and m["speed_of_light_s"] is None  # unknown for an endpoint
    assert "openai" in capsys.readouterr().out


def test_text_prompts(tmp_path) -> None:
    with StubServer() as stub:
        rc = main(["bench", "offline", "--engines", "openai", "--endpoint", stub.url, "-n", "2",
                   "--input-len", "6", "--output-len", "2", "--prompt-format", "text", "--no-sol",
                   "--no-progress", "--out", str(tmp_path / "p")])
    assert rc == 0
    texts = [b["prompt"] for b in stub.bodies]
    assert len(texts) == 1 + 2  # one warm-up request, then the two measured
    assert all(isinstance(t, str) and len(t.split()) == 6 for t in texts)


def test_endpoint_normalization() -> None:
    for url in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/completions", "h:8000"):
        assert normalize_endpoint(url) == "http://h:8000"
    assert ids_to_text([0, 1]) == "the of"
