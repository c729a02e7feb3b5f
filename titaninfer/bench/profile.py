"""`titaninfer profile`: a torch.profiler trace of N engine steps and the top kernels.

Writes into the output directory:
    trace.json    Chrome trace (open in chrome://tracing or https://ui.perfetto.dev)
    kernels.json  the table below plus the step wall times and the device's ceilings
                  (what `titaninfer roofline --profile DIR` reads)

Rows are GPU kernels on CUDA (device time), aten operators on a CPU (self CPU time).
`share` is a row's time over the summed wall time of the profiled steps. Achieved FLOP/s
comes from the profiler's FLOP counts (matmuls); achieved bytes/s from the input shapes of
matmuls and elementwise operators, assuming the engine's dtype for every tensor. On CUDA,
kernels carry no shapes, so the matmul operators are listed again at the operator level
with their derived rates.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

_MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm"}
_ELEMENTWISE = {"aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::copy_", "aten::silu",
                "aten::neg", "aten::cat", "aten::index_select", "aten::embedding", "aten::rsqrt",
                "aten::pow", "aten::mean", "aten::to", "aten::_to_copy", "aten::index_put_",
                "aten::scaled_dot_product_attention", "aten::_softmax", "aten::softmax"}


@dataclass
class KernelRow:
    name: str
    calls: int
    time_s: float
    share: float
    flops: float | None = None
    bytes: float | None = None

    @property
    def flops_per_s(self) -> float | None:
        return self.flops / self.time_s if self.flops and self.time_s > 0 else None

    @property
    def bytes_per_s(self) -> float | None:
        return self.bytes / self.time_s if self.bytes and self.time_s > 0 else None


def _numel(shape: list) -> int:
    return math.prod(shape) if shape else 0


def derive_bytes(name: str, shapes: list[list[int]], elem: int, calls: int) -> float | None:
    """Bytes an operator must move (inputs read + output written), from its input shapes."""
    tensors = [s for s in shapes if isinstance(s, list) and s]
    if name in _MATMULS and len(tensors) >= 2:
        a, b = tensors[-2], tensors[-1]
        if name in ("aten::addmm", "aten::baddbmm") and len(tensors) >= 3:
            a, b = tensors[1], tensors[2]
        batch = _numel(a[:-2]) if len(a) > 2 else 1
        m, k, n = a[-2], a[-1], b[-1]
        return float(calls * elem * batch * (m * k + k * n + m * n))
    if name in _ELEMENTWISE and tensors:
        out = _numel(tensors[0])
        return float(calls * elem * (sum(_numel(t) for t in tensors) + out))
    return None


def _time_us(evt: Any, cuda: bool) -> float:
    if cuda:
        return float(getattr(evt, "self_device_time_total", 0) or getattr(evt, "self_cuda_time_total", 0) or 0)
    return float(evt.self_cpu_time_total)


def kernel_rows(prof: Any, cuda: bool, step_total_s: float, elem: int) -> tuple[list[KernelRow], list[KernelRow]]:
    """(top rows by time, matmul operator rows with derived rates)."""
    from torch.autograd import DeviceType

    rows: list[KernelRow] = []
    ops: list[KernelRow] = []
    for e in prof.key_averages(group_by_input_shape=True):
        is_kernel = e.device_type == DeviceType.CUDA
        name = e.key
        shapes = e.input_shapes or []
        nbytes = derive_bytes(name, shapes, elem, e.count)
        flops = float(e.flops) if getattr(e, "flops", 0) else None
        if cuda and not is_kernel:
            if name in _MATMULS:
                t = float(getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0) or 0) / 1e6
                if t > 0:
                    ops.append(KernelRow(f"{name} {shapes}", e.count, t, t / step_total_s, flops, nbytes))
            continue
        t = _time_us(e, cuda) / 1e6
        if t <= 0:
            continue
        label = name if cuda or not shapes or nbytes is None and flops is None else f"{name} {shapes}"
        rows.append(KernelRow(label, e.count, t, t / step_total_s, flops, nbytes))
    # Merge rows of the same label (kernels appear once per launch site).
    merged: dict[str, KernelRow] = {}
    for r in rows:
        m = merged.get(r.name)
        if m is None:
            merged[r.name] = r
        else:
            m.calls += r.calls
            m.time_s += r.time_s
            m.share += r.share
            m.flops = (m.flops or 0) + (r.flops or 0) or None
            m.bytes = (m.bytes or 0) + (r.bytes or 0) or None
    return sorted(merged.values(), key=lambda r: -r.time_s), sorted(ops, key=lambda r: -r.time_s)


def format_rows(rows: list[KernelRow], top: int) -> str:
    head = f"{'kernel / operator':<70} {'calls':>6} {'total ms':>9} {'share':>6} {'GFLOP/s':>9} {'GB/s':>8}"
    out = [head, "-" * len(head)]
    for r in rows[:top]:
        fl = "-" if r.flops_per_s is None else f"{r.flops_per_s / 1e9:.1f}"
        bw = "-" if r.bytes_per_s is None else f"{r.bytes_per_s / 1e9:.1f}"
        name = r.name if len(r.name) <= 70 else r.name[:67] + "..."
        out.append(f"{name:<70} {r.calls:>6} {r.time_s * 1e3:>9.2f} {r.share * 100:>5.1f}% {fl:>9} {bw:>8}")
    return "\n".join(out)


@dataclass
class ProfileResult:
    out_dir: str
    step_wall_s: list[float]
    step_tokens: list[int]
    rows: list[KernelRow]
    matmul_ops: list[KernelRow]


def profile_engine(engine: Any, prompts: list[list[int]], output_len: int, num_steps: int, warmup_steps: int,
                   out_dir: str) -> ProfileResult:
    """Queue `prompts`, run `warmup_steps` unprofiled steps, then profile `num_steps`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from titaninfer.types import SamplingParams

    cuda = engine.config.device.startswith("cuda")
    elem = torch.tensor([], dtype=engine.config.dtype).element_size()
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    for p in prompts:
        engine.add_request(p, params)
    for _ in range(warmup_steps):
        if engine.has_unfinished_requests():
            engine.step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    walls: list[float] = []
    tokens: list[int] = []
    orig = engine.scheduler.schedule

    def counting_schedule():  # type: ignore[no-untyped-def]
        out = orig()
        tokens.append(out.num_tokens)
        return out

    engine.scheduler.schedule = counting_schedule
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with torch_profile(activities=acts, record_shapes=True, with_flops=True) as prof:
            for _ in range(num_steps):
                if not engine.has_unfinished_requests():
                    break
                t0 = time.perf_counter()
                engine.step()
                sync()
                walls.append(time.perf_counter() - t0)
    finally:
        del engine.scheduler.schedule
    while engine.has_unfinished_requests():  # finish the queued work so no block stays held
        engine.step()
    os.makedirs(out_dir, exist_ok=True)
    prof.export_chrome_trace(os.path.join(out_dir, "trace.json"))
    total = sum(walls) or 1e-9
    rows, ops = kernel_rows(prof, cuda, total, elem)
    return ProfileResult(out_dir, walls, tokens, rows, ops)


def write_profile_json(res: ProfileResult, ceilings: dict | None, extra: dict[str, Any]) -> str:
    path = os.path.join(res.out_dir, "kernels.json")
    row = lambda r: {**asdict(r), "flops_per_s": r.flops_per_s, "bytes_per_s": r.bytes_per_s}  # noqa: E731
    with open(path, "w") as f:
        json.dump({**extra, "ceilings": ceilings, "step_wall_s": res.step_wall_s, "step_tokens": res.step_tokens,
                   "mean_step_s": float(np.mean(res.step_wall_s)) if res.step_wall_s else None,
                   "rows": [row(r) for r in res.rows], "matmul_ops": [row(r) for r in res.matmul_ops]},
                  f, indent=2, default=str)
    return path
