"""Pieces every Triton kernel family shares.

The Triton interpreter (CPU) rounds float32 -> bfloat16 by truncation and computes bf16
dots wrongly; under it, kernels run their dots in float32 and `round_to` emulates the GPU's
round-to-nearest-even, so CPU tests check the rounding the GPU really does.

Programmatic dependent launch (PDL, Hopper and later): a kernel launched with
`**pdl_launch_kwargs(...)` may start while the kernel before it in the stream is still
running. It calls `await_producer(PDL)` before it touches anything an earlier kernel of the
step writes; that call blocks until the previous kernel has finished (its writes visible)
and then lets the next kernel begin launching. What a kernel does before the call may only
read memory no kernel of the step writes: the weights, and the step inputs the runner
copies in before its first kernel (positions, slots). A decode step of a small batch is
~200 short kernels in a row, each paying a launch and a ramp to full bandwidth; with PDL
each GEMV streams its first weight tile while its predecessor is still running.
Completion is transitive (a kernel finishes only after its own wait), so waiting for the
previous kernel is waiting for all of them. A kernel after a non-PDL one (cuBLAS, PyTorch)
just waits for it as usual.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from titaninfer import env

try:  # grid dependency control, Triton >= 3.4
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older Triton: PDL stays off
    gdc_launch_dependents = gdc_wait = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEFAULT_NUM_SMS = 132  # H100 SXM: what launch heuristics assume off-GPU (interpreter)


@triton.jit
def round_to(x, dtype: tl.constexpr, emulate_rne: tl.constexpr):
    """float32 -> dtype with round-to-nearest-even, also under the interpreter."""
    if emulate_rne and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(dtype)
    return x.to(dtype)


# RMSNorm's statistics, shared by every kernel that normalises (rmsnorm.py, the skinny GEMM's
# norm prologues and its residual epilogue): they must compute them alike, bit for bit.
@triton.jit
def sum_squares(x):
    """Row sums of x * x [R, C] -> [R] float64. Squares of 16-bit values are exact in
    float64 and a few thousand of them sum exactly (or within 2^-40), so the float32
    rounding in `rms_rstd` does not depend on how the terms were grouped or ordered."""
    x64 = x.to(tl.float64)
    return tl.sum(x64 * x64, axis=1)


@triton.jit
def rms_rstd(sum_sq, n, eps):
    """1 / sqrt(mean square + eps) from a float64 `sum_squares` over n columns: IEEE sqrt
    and divide (not rsqrt.approx), one rounding each, as torch.rsqrt on a CPU."""
    return tl.div_rn(1.0, tl.sqrt_rn(sum_sq.to(tl.float32) / n + eps))


# When a kernel lets the next one launch (PDL modes): after its own wait (1: at most one
# kernel waits ahead of the running one) or before it (2: a chain of short kernels can all
# be resident and waiting, so a GEMV after them starts its weight loads even earlier).
# Mode 2 with two preloaded weight tiles (skinny_gemm._PRELOAD_TILES) measured best on an
# H200 at batch 1 (benchmarks/results/README.md): Llama-3-8B 4.25 -> 4.16 ms per token.
PDL_TRIGGER_AFTER_WAIT, PDL_TRIGGER_BEFORE_WAIT = 1, 2
PDL_MODE = PDL_TRIGGER_BEFORE_WAIT


@triton.jit
def await_producer(PDL: tl.constexpr):
    """With PDL (a mode above): wait until the previous kernel has finished and its writes
    are visible, and allow the next kernel to launch. A no-op when PDL is 0."""
    if PDL == 1:
        gdc_wait()
        gdc_launch_dependents()
    elif PDL == 2:
        gdc_launch_dependents()
        gdc_wait()


@functools.cache
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)


def pdl_mode(device: torch.device) -> int:
    """The PDL mode for kernels on `device` (0: off): PDL_MODE on a CUDA GPU of compute
    capability >= 9.0 with a Triton that has grid dependency control, not the interpreter,
    and TITANINFER_PDL not 0."""
    if device.type != "cuda" or INTERPRET or gdc_wait is None:
        return 0
    index = device.index if device.index is not None else torch.cuda.current_device()
    return PDL_MODE if _capability(index) >= (9, 0) and env.programmatic_dependent_launch() else 0


def pdl_launch_kwargs(pdl: int) -> dict[str, bool]:
    """Extra launch arguments for a kernel compiled with PDL=pdl."""
    return {"launch_pdl": True} if pdl else {}


def check_paged_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, int]:
    """Validate q [T, Hq, D] against paged caches [num_blocks, block_size, Hk, D] for the
    attention kernels; returns (block_size, Hk)."""
    hq, d = q.shape[1], q.shape[2]
    nb, kv_block, hk, d_c = k_cache.shape
    if v_cache.shape != k_cache.shape or d_c != d:
        raise ValueError(f"q {tuple(q.shape)} / caches {tuple(k_cache.shape)}, "
                         f"{tuple(v_cache.shape)} disagree")
    if hq % hk:
        raise ValueError(f"{hq} query heads are not a multiple of {hk} KV heads")
    if d & (d - 1) or not 16 <= d <= 256:
        raise ValueError(f"head dim {d} must be a power of two in [16, 256]")
    if k_cache.dtype not in (torch.float16, torch.bfloat16) or v_cache.dtype != k_cache.dtype:
        raise TypeError(f"caches must be fp16/bf16, got {k_cache.dtype}/{v_cache.dtype}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("q and caches need a contiguous last dim")
    return kv_block, hk


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def device_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (DEFAULT_NUM_SMS off a GPU), for grid sizing."""
    if device.type != "cuda":
        return DEFAULT_NUM_SMS
    return _num_sms(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def last_to_arrive(counter_ptr, arrivals):
    """Count this program in at counter_ptr (one of `zeroed_counters`); true for the last
    of `arrivals` programs, which may then read what the others stored before arriving
    (with .cg loads, past L1) and must zero the counter. The CTA barrier orders all of this
    program's threads' stores before the count; the acq_rel atomic at GPU scope makes the
    others' stores visible to the last arriver."""
    tl.debug_barrier()
    return tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") == arrivals - 1


_counters: dict[tuple[str, torch.device], torch.Tensor] = {}
# Every counter buffer handed out stays alive: a CUDA graph captured with one keeps its
# address, so a buffer replaced by a larger one must never be freed and reused.
_retired_counters: list[torch.Tensor] = []
_MIN_COUNTERS = 4096


def zeroed_counters(device: torch.device, n: int, owner: str) -> torch.Tensor:
    """At least n int32 counters on `device`, zero, for `owner`'s ticket kernels (the last
    program of a group to count itself in finishes the group's work, then zeroes its
    counter). Invariant: every kernel leaves the counters it took at zero, and kernels
    sharing an owner's buffer run in stream order. Allocated in the first, uncaptured,
    warm-up call and reused."""
    key = (owner, device)
    buf = _counters.get(key)
    if buf is None or buf.numel() < n:
        if buf is not None:
            _retired_counters.append(buf)
        buf = _counters[key] = torch.zeros(max(n, _MIN_COUNTERS), dtype=torch.int32, device=device)
    return buf


# Kernel timelines (benchmarks/kernel_trace.py). A traced kernel stores the GPU's global
# nanosecond timer at a few points of each program (start, after its PDL wait, ...) into a
# slot of the active `KernelTrace`; with no trace active it compiles without them
# (TRACE=False), so the engine's kernels are unchanged.
@triton.jit
def stamp(trace_ptr, program, i, after, NSTAMPS: tl.constexpr, TRACE: tl.constexpr):
    """With TRACE: trace_ptr[program * NSTAMPS + i] = %globaltimer, read once `after` (an
    int32 the caller derives from the work to time) exists, so it cannot move before it."""
    if TRACE:
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [after], dtype=tl.int64,
                                      is_pure=False, pack=1)
        tl.store(trace_ptr + program * NSTAMPS + i, t)


class KernelTrace:
    """A device buffer of per-program timestamps and, in launch order, which kernel wrote
    which part: records of (name, offset, programs, stamps per program)."""

    def __init__(self, device: torch.device, capacity: int = 1 << 22) -> None:
        self.buffer = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.records: list[tuple[str, int, int, int]] = []
        self.used = 0

    def reset(self) -> None:
        self.records.clear()
        self.used = 0

    def take(self, name: str, programs: int, stamps: int) -> torch.Tensor:
        need = programs * stamps
        if self.used + need > self.buffer.numel():
            raise RuntimeError(f"KernelTrace: {self.buffer.numel()} stamps are not enough")
        self.records.append((name, self.used, programs, stamps))
        view = self.buffer[self.used:self.used + need]
        self.used += need
        return view


active_trace: KernelTrace | None = None


def trace_slot(name: str, programs: int, stamps: int, placeholder: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(where a kernel launch stores its stamps, TRACE): a slot of `active_trace`, or the
    placeholder (never written) and False when no trace is active."""
    if active_trace is None:
        return placeholder, False
    return active_trace.take(name, programs, stamps), True
