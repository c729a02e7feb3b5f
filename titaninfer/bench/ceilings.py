"""Measured device ceilings: memory bandwidth and matmul throughput, cached per device.

Bandwidth: a large device-to-device copy, counting bytes read + bytes written.
Compute: a large square matmul (bf16 on a GPU, fp32 on a CPU, the dtypes the engine runs
by default there), counting 2*n^3 FLOPs. Both take the best of several timed repetitions
after a warm-up, since the ceiling is what the hardware *can* do.

Results are cached in `titaninfer.env.cache_dir()/ceilings.json`, keyed by device name (for
a CPU the key includes the thread count, which changes the compute ceiling). On a CPU the
whole measurement takes a few seconds.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from titaninfer import env


@dataclass(frozen=True)
class Ceilings:
    device: str  # the cache key: GPU name, or "cpu:<model>:<threads>t"
    bw_bytes_per_s: float
    flops_per_s: float
    compute_dtype: str
    copy_bytes: int  # size of the copied tensor (each copy moves 2x this)
    matmul_n: int
    measured_at: str

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where the roofline turns from bandwidth- to compute-bound."""
        return self.flops_per_s / self.bw_bytes_per_s

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Ceilings:
        return Ceilings(**{k: d[k] for k in Ceilings.__dataclass_fields__})


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_key(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu:{_cpu_model_name()}:{torch.get_num_threads()}t"


def _cache_path() -> str:
    return os.path.join(env.cache_dir(), "ceilings.json")


def _load_cache() -> dict:
    try:
        with open(_cache_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _best_time(fn: Callable[[], object], sync: Callable[[], None], reps: int, budget_s: float) -> float:
    """Best wall time of `fn` over up to `reps` runs (stopping early past `budget_s`)."""
    fn()
    sync()  # warm-up: allocation, kernel selection, page faults
    best = float("inf")
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return best


def _time_copy(dev: torch.device, nbytes: int, sync: Callable[[], None], reps: int, budget: float) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).fill_(1.0)
    dst = torch.empty_like(src)
    return _best_time(lambda: dst.copy_(src), sync, reps, budget)


def measure(device: str) -> Ceilings:
    """Measure now (no cache). A few seconds on a CPU, about a second on a GPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        copy_bytes, n, dtype, reps, budget = 1 << 30, 8192, torch.bfloat16, 20, 2.0
    else:
        # 256 MiB is far beyond any CPU's last-level cache, and copies in ~0.1 s. Many short
        # repetitions over ~2 s each: on a shared host the best one is the one nobody disturbed.
        copy_bytes, n, dtype, reps, budget = 1 << 28, 2048, torch.float32, 40, 2.0

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t_copy = _time_copy(dev, copy_bytes, sync, reps, budget)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    t_mm = _best_time(lambda: torch.mm(a, b), sync, reps, budget)
    return Ceilings(
        device=device_key(device),
        bw_bytes_per_s=2 * copy_bytes / t_copy,
        flops_per_s=2 * n**3 / t_mm,
        compute_dtype=str(dtype).removeprefix("torch."),
        copy_bytes=copy_bytes,
        matmul_n=n,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def get_ceilings(device: str, refresh: bool = False) -> Ceilings:
    """The cached ceilings of `device`, measuring (and caching) them when absent."""
    key = device_key(device)
    cache = _load_cache()
    if not refresh and key in cache:
        try:
            return Ceilings.from_dict(cache[key])
        except (KeyError, TypeError):
            pass  # an older cache layout: measure again
    c = measure(device)
    cache[key] = c.to_dict()
    os.makedirs(env.cache_dir(), exist_ok=True)
    tmp = _cache_path() + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=2)
    os.replace(tmp, _cache_path())  # atomic: concurrent runs never read half a file
    return c


def format_ceilings(c: Ceilings) -> str:
    return (f"{c.device}: bandwidth {c.bw_bytes_per_s / 1e9:.1f} GB/s (copy, read+write), "
            f"compute {c.flops_per_s / 1e12:.3f} TFLOP/s ({c.compute_dtype} matmul n={c.matmul_n}), "
            f"ridge {c.ridge_flops_per_byte:.1f} FLOP/B")
