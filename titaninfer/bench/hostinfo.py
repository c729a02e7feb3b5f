"""Facts about the machine and the code a run used: git state, host, GPU, library versions.

Every probe is best-effort: a missing tool (no git, no nvidia-smi) gives None, never an
error, because an evidence pack must still be written on any machine.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from typing import Any

import torch

from titaninfer import env


def _run(cmd: list[str], cwd: str | None = None) -> str | None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def repo_root() -> str:
    import titaninfer

    return os.path.dirname(os.path.dirname(os.path.abspath(titaninfer.__file__)))


def git_state() -> dict[str, Any]:
    """sha of HEAD and whether the working tree differs from it (read-only git calls).

    TITANINFER_GIT_SHA, when set, is the sha instead (with "dirty": None, unknown): for a copy
    of the tree whose .git is missing or stale, such as the remote GPU machine's."""
    given = env.git_sha_override()
    if given:
        return {"sha": given, "dirty": None}
    root = repo_root()
    sha = _run(["git", "rev-parse", "HEAD"], cwd=root)
    status = _run(["git", "status", "--porcelain"], cwd=root)  # untracked files count: they can change behaviour
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def command_line() -> str:
    """The command as the user typed it (as far as sys.argv tells), or as the in-process
    call of titaninfer.cli.main(argv) spelled it."""
    from titaninfer import cli

    if cli.invoked_argv is not None:
        return shlex.join(["titaninfer", *cli.invoked_argv])
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "titaninfer":
        return shlex.join(["titaninfer", *sys.argv[1:]])
    if argv0.endswith(os.path.join("bench", "__main__.py")):
        return shlex.join(["python", "-m", "titaninfer.bench", *sys.argv[1:]])
    return shlex.join(sys.argv)  # e.g. a test calling titaninfer.cli.main() in process


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    from titaninfer.bench.ceilings import _cpu_model_name

    return _cpu_model_name()


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
    except ImportError:
        return None
    return getattr(m, "__version__", None)


def host_info() -> dict[str, Any]:
    gpu: dict[str, Any] = {"name": None, "count": 0, "driver": None, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        gpu["name"] = torch.cuda.get_device_name(0)
        gpu["count"] = torch.cuda.device_count()
        drv = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        gpu["driver"] = drv.splitlines()[0] if drv else None
        gpu["memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": _mem_total_bytes(),
        "gpu": gpu,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "triton": _version("triton"),
            "transformers": _version("transformers"),
            "numpy": _version("numpy"),
            "aiohttp": _version("aiohttp"),
            "titaninfer": _version("titaninfer"),
        },
    }
