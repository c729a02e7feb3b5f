"""Every environment variable TitanInfer reads, read here and nowhere else.

Values are read at call time (not import time) so tests can monkeypatch them.
"""

from __future__ import annotations

import os


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def use_reference_kernels() -> bool:
    """TITANINFER_REFERENCE_KERNELS=1 runs every layer on its plain-PyTorch reference,
    also on CUDA: the switch for debugging a kernel against its reference in a full model."""
    return _flag("TITANINFER_REFERENCE_KERNELS")


def disable_cuda_graphs() -> bool:
    """TITANINFER_NO_CUDA_GRAPHS=1 runs every step eagerly."""
    return _flag("TITANINFER_NO_CUDA_GRAPHS")


def cache_dir() -> str:
    """Where measured device ceilings and similar per-machine facts are cached."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "titaninfer")
    return os.environ.get("TITANINFER_CACHE_DIR", default)


def api_key() -> str | None:
    """TITANINFER_API_KEY: the server's Bearer key when --api-key is not given."""
    return os.environ.get("TITANINFER_API_KEY") or None


def log_level() -> str:
    return os.environ.get("TITANINFER_LOG_LEVEL", "INFO").upper()


def skinny_gemm_max_rows() -> int:
    """TITANINFER_SKINNY_MAX_ROWS: batches of at most this many tokens run their projections
    on the skinny (GEMV) Triton kernel with RMSNorm / SiLU fused in; 0 turns it off. The
    default, 2, is where it beat cuBLAS on an H200 (benchmarks/skinny_sweep.py; at 2 rows
    with its 3-D accumulator, `skinny_gemm._ACC3_AT_TWO_ROWS`)."""
    return int(os.environ.get("TITANINFER_SKINNY_MAX_ROWS", "2"))


def git_sha_override() -> str | None:
    """TITANINFER_GIT_SHA: the commit a benchmark records in its manifest, for trees copied
    without (or with a stale) .git; unset, git is asked."""
    return os.environ.get("TITANINFER_GIT_SHA") or None


def programmatic_dependent_launch() -> bool:
    """TITANINFER_PDL=0 launches the Triton kernels without programmatic dependent launch
    (on by default where the GPU has it, Hopper and later; see kernels/triton_common.py)."""
    return _flag("TITANINFER_PDL", default=True)
