"""`titaninfer bench gate`: a planted 10% regression fails the gate, equal packs pass."""

from __future__ import annotations

import os

import pytest

from titaninfer.bench.gate import compare, parse_tolerance
from titaninfer.bench.metrics import METRIC_NAMES
from titaninfer.bench.pack import load_pack, write_pack
from titaninfer.cli import main

BASE = {
    "output_tok_per_s": 1000.0, "total_tok_per_s": 2000.0, "req_per_s": 4.0,
    "ttft_s_p50": 0.1, "ttft_s_p90": 0.2, "ttft_s_p99": 0.3,
    "tpot_s_p50": 0.01, "tpot_s_p90": 0.012, "tpot_s_p99": 0.015,
    "itl_s_p50": 0.01, "itl_s_p90": 0.012, "itl_s_p99": 0.02,
    "e2e_s_p50": 1.0, "e2e_s_p99": 2.0,
    "gpu_mem_peak_bytes": None, "kv_blocks_total": 1000, "kv_util_peak": 0.5, "prefix_hit_rate": 0.0,
    "num_preemptions": 0, "speed_of_light_s": 0.5, "sol_ratio": 0.25,
}


def _pack(path: str, **changes: float) -> str:
    m = {**BASE, **changes}
    assert tuple(m) == METRIC_NAMES
    write_pack(path, {"name": os.path.basename(path)}, {"titaninfer": m}, [], "# test\n")
    return path


def test_equal_packs_pass(tmp_path, capsys) -> None:
    a, b = _pack(str(tmp_path / "a")), _pack(str(tmp_path / "b"))
    assert main(["bench", "gate", "--baseline", a, "--current", b, "--tolerance", "5%"]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "output_tok_per_s" in out


def test_planted_throughput_regression_fails(tmp_path, capsys) -> None:
    a = _pack(str(tmp_path / "a"))
    b = _pack(str(tmp_path / "b"), output_tok_per_s=900.0)  # -10%
    assert main(["bench", "gate", "--baseline", a, "--current", b, "--tolerance", "5%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "-10.0%" in out
    # The same drop is within a 15% tolerance.
    assert main(["bench", "gate", "--baseline", a, "--current", b, "--tolerance", "15%"]) == 0


def test_planted_latency_regression_fails(tmp_path) -> None:
    a = _pack(str(tmp_path / "a"))
    b = _pack(str(tmp_path / "b"), ttft_s_p99=0.33)  # +10%: lower is better
    rows = compare(load_pack(a), load_pack(b), 0.05)
    bad = [r for r in rows if r.regressed]
    assert [(r.metric, round(r.change, 3)) for r in bad] == [("ttft_s_p99", 0.1)]


def test_improvements_and_facts_do_not_fail(tmp_path) -> None:
    a = _pack(str(tmp_path / "a"))
    b = _pack(str(tmp_path / "b"), output_tok_per_s=1500.0, ttft_s_p50=0.05, kv_blocks_total=10,
              speed_of_light_s=5.0)
    rows = {r.metric: r.status for r in compare(load_pack(a), load_pack(b), 0.05)}
    assert rows["output_tok_per_s"] == "improved" and rows["ttft_s_p50"] == "improved"
    assert rows["kv_blocks_total"] == "skipped" and rows["speed_of_light_s"] == "skipped"
    assert rows["gpu_mem_peak_bytes"] == "skipped"  # unknown on both sides


def test_new_preemptions_regress(tmp_path) -> None:
    a, b = _pack(str(tmp_path / "a")), _pack(str(tmp_path / "b"), num_preemptions=3)
    assert any(r.metric == "num_preemptions" and r.regressed for r in compare(load_pack(a), load_pack(b), 0.05))


def test_tolerance_parsing() -> None:
    assert parse_tolerance("5%") == pytest.approx(0.05) and parse_tolerance("0.1") == pytest.approx(0.1)
    for bad in ("x", "150%", "-1%"):
        with pytest.raises(ValueError):
            parse_tolerance(bad)


def test_gate_user_errors_exit_2(tmp_path, capsys) -> None:
    a = _pack(str(tmp_path / "a"))
    assert main(["bench", "gate", "--baseline", a, "--current", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("titaninfer: error:")
    assert main(["bench", "gate", "--baseline", a, "--current", a, "--tolerance", "lots"]) == 2
