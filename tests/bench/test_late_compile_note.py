"""A kernel compiled during the timed run is named in the pack's notes (its stall is inside
the figures). The compile is simulated: on a CPU nothing is compiled."""

from __future__ import annotations

import os

import pytest

from titaninfer.cli import main
from titaninfer.engine.engine import LLMEngine
from titaninfer.kernels import compile_watch

pytestmark = pytest.mark.slow


def test_compile_during_timed_run_is_noted(tmp_path, monkeypatch) -> None:
    real_step = LLMEngine.step

    def step_with_a_compile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        compile_watch._on_compile(repr="_fake_kernel[num_warps=4](x_ptr: *bf16)")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(LLMEngine, "step", step_with_a_compile)
    monkeypatch.setenv("TITANINFER_CACHE_DIR", str(tmp_path / "cache"))
    out = str(tmp_path / "pack")
    assert main(["bench", "latency", "-n", "1", "--engines", "titaninfer", "--input-len", "8",
                 "--output-len", "4", "--device", "cpu", "--no-progress", "--out", out]) == 0
    with open(os.path.join(out, "summary.md")) as f:
        summary = f.read()
    assert "Triton kernel variants compiled during the timed run" in summary
    assert "_fake_kernel" in summary


def test_start_up_compiles_are_not_reported() -> None:
    before = len(compile_watch.late_compiles())
    with compile_watch.starting_up():
        compile_watch._on_compile(repr="_startup_kernel[num_warps=4]()")
    assert len(compile_watch.late_compiles()) == before
    compile_watch._on_compile(repr="_late_kernel[num_warps=4]()")
    assert compile_watch.late_compiles()[-1].startswith("_late_kernel")
