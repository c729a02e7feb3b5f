"""End to end on the real SmolLM2-135M-Instruct (CPU): `bench offline` side by side with
Hugging Face and `bench latency` write complete evidence packs; profile, roofline and the
gate work on them. Sizes are tiny (4 requests, 16 in / 8 out) to keep this fast."""

from __future__ import annotations

import json
import os

import pytest

from titaninfer.cli import main

# Spelled out here rather than imported, so the test fails if the code drifts from BENCHMARKS.md.
METRICS = [
    "output_tok_per_s", "total_tok_per_s", "req_per_s",
    "ttft_s_p50", "ttft_s_p90", "ttft_s_p99", "tpot_s_p50", "tpot_s_p90", "tpot_s_p99",
    "itl_s_p50", "itl_s_p90", "itl_s_p99", "e2e_s_p50", "e2e_s_p99",
    "gpu_mem_peak_bytes", "kv_blocks_total", "kv_util_peak", "prefix_hit_rate", "num_preemptions",
    "speed_of_light_s", "sol_ratio",
]
PACK_FILES = ["manifest.json", "requests.jsonl", "metrics.json", "summary.md",
              "latency_cdf.png", "throughput.png", "roofline.png"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TITANINFER_CACHE_DIR", str(root / "cache"))  # ceilings measured fresh, once
        offline, latency = str(root / "offline"), str(root / "latency")
        common = ["--input-len", "16", "--output-len", "8", "--device", "cpu", "--no-progress"]
        assert main(["bench", "offline", "-n", "4", "--engines", "titaninfer,hf", *common, "--out", offline]) == 0
        assert main(["bench", "latency", "-n", "1", "--engines", "titaninfer,hf", *common, "--out", latency,
                     "--results-dir", str(root / "results")]) == 0
        yield {"offline": offline, "latency": latency, "root": root}


def _load(path: str, name: str):
    with open(os.path.join(path, name)) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f]
        return json.load(f)


@pytest.mark.parametrize("kind", ["offline", "latency"])
def test_pack_is_complete(runs, kind: str) -> None:
    path = runs[kind]
    for name in PACK_FILES:
        assert os.path.getsize(os.path.join(path, name)) > 0, name
    metrics = _load(path, "metrics.json")
    assert list(metrics) == ["titaninfer", "hf"]
    for eng, m in metrics.items():
        assert list(m) == METRICS, eng
        assert m["output_tok_per_s"] > 0 and m["ttft_s_p50"] > 0 and m["itl_s_p50"] > 0
        assert 0 < m["sol_ratio"] <= 1.0, "the floor must be below what was measured"
    assert metrics["titaninfer"]["kv_blocks_total"] > 0 and metrics["titaninfer"]["num_preemptions"] == 0

    man = _load(path, "manifest.json")
    assert len(man["git"]["sha"]) == 40 and isinstance(man["git"]["dirty"], bool)
    assert man["command"].startswith(f"titaninfer bench {kind} ")
    tcfg = man["engine_config"]["titaninfer"]
    assert tcfg["cache"]["num_blocks"] > 0 and tcfg["scheduler"]["max_num_batched_tokens"] == 8192
    model = man["model"]
    assert model["architecture"] == "LlamaForCausalLM" and model["dtype"] == "float32"
    assert model["weights_source"].startswith("gguf:") and len(model["weights_sha256"]) == 64
    assert man["workload"]["seed"] == 0 and man["workload"]["input_len"] == [16, 16]
    host = man["host"]
    assert host["cpu"] and host["ram_bytes"] > 0
    assert {"name", "driver", "cuda"} <= set(host["gpu"])
    assert {"torch", "triton", "transformers"} <= set(host["versions"])
    assert man["ceilings"]["bw_bytes_per_s"] > 0 and man["ceilings"]["flops_per_s"] > 0

    reqs = _load(path, "requests.jsonl")
    n = 4 if kind == "offline" else 1
    assert sorted(r["engine"] for r in reqs) == ["hf"] * n + ["titaninfer"] * n
    for r in reqs:
        assert r["prompt_len"] == 16 and r["output_len"] == 8 and r["error"] is None
        assert len(r["itl_s"]) == 7 and 0 < r["ttft_s"] <= r["e2e_s"]


def test_offline_side_by_side_table(runs) -> None:
    with open(os.path.join(runs["offline"], "summary.md")) as f:
        summary = f.read()
    assert "| metric | titaninfer | hf | titaninfer/hf |" in summary
    assert "output_tok_per_s" in summary and "sol_ratio" in summary
    assert "continuous batching" in json.dumps(_load(runs["offline"], "manifest.json")["engine_config"]["hf"])


def test_recorded_steps_match_the_schedule(runs) -> None:
    # 4 requests of 16 tokens fit one step; 7 decode steps follow for 8 tokens each.
    sol = _load(runs["offline"], "manifest.json")["sol"]
    assert sol["titaninfer"]["source"] == "recorded" and sol["titaninfer"]["num_steps"] == 8
    assert sol["hf"]["source"] == "reconstructed" and sol["hf"]["num_steps"] == 8
    assert sol["titaninfer"]["speed_of_light_s"] == pytest.approx(sol["hf"]["speed_of_light_s"])
    lat = _load(runs["latency"], "manifest.json")["sol"]["titaninfer"]
    assert lat["num_steps"] == 8  # 1 prefill + 7 decodes


def test_results_dir_copy(runs) -> None:
    assert os.path.isfile(os.path.join(runs["root"], "results", "latency-decode-latency.md"))


def test_gate_on_equal_pack_passes(runs) -> None:
    p = runs["offline"]
    assert main(["bench", "gate", "--baseline", p, "--current", p]) == 0


def test_roofline_from_pack(runs) -> None:
    out = os.path.join(runs["root"], "roof.png")
    assert main(["roofline", "--pack", runs["offline"], "--out", out]) == 0
    assert os.path.getsize(out) > 0


def test_profile_writes_trace_and_table(runs, capsys) -> None:
    out = os.path.join(runs["root"], "profile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TITANINFER_CACHE_DIR", str(runs["root"] / "cache"))
        assert main(["profile", "-n", "2", "--input-len", "8", "--output-len", "4", "--steps", "2",
                     "--warmup-steps", "1", "--device", "cpu", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "2 steps profiled" in text and "aten::mm" in text and "share" in text
    # PDL is off while profiling (kernel times would overlap) and the setting is restored.
    assert "programmatic dependent launch off" in text
    assert os.environ.get("TITANINFER_PDL") is None
    assert os.path.getsize(os.path.join(out, "trace.json")) > 0
    table = _load(out, "kernels.json")
    assert table["rows"] and any(r["flops_per_s"] for r in table["rows"])
    assert main(["roofline", "--profile", out]) == 0
