"""The evidence pack: one directory per `titaninfer bench` run (BENCHMARKS.md).

    manifest.json   git sha + dirty flag, command line, engine configs, model, workload
                    and seed, host, GPU/driver/CUDA, library versions, measured ceilings,
                    speed-of-light details per engine
    requests.jsonl  one line per request and engine ("engine" field says which)
    metrics.json    {engine: {metric: value}}; each inner dict has exactly METRIC_NAMES
    summary.md      the side-by-side table, ratios, speed of light, notes, baseline gate
    *.png           latency CDFs, throughput, roofline

Several engines of one invocation share a pack (same workload, seed and machine), which is
why metrics.json is keyed by engine even when there is only one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from titaninfer.bench.metrics import METRIC_NAMES

PACK_FILES = ("manifest.json", "requests.jsonl", "metrics.json", "summary.md")


def default_run_dir(name: str, root: str = "runs") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(root, f"{stamp}-{name}")
    n = 1
    while os.path.exists(path):  # two runs in the same second must not share a pack
        n += 1
        path = os.path.join(root, f"{stamp}-{name}-{n}")
    return path


@dataclass
class Pack:
    path: str
    manifest: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def engines(self) -> list[str]:
        return list(self.metrics)


def _dump(obj: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=str, allow_nan=False)
        f.write("\n")


def _finite(v: Any) -> Any:
    # JSON has no inf/nan; a metric that is not a finite number is "unknown".
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    return v


def write_pack(path: str, manifest: dict[str, Any], metrics: dict[str, dict[str, Any]],
               requests: list[dict[str, Any]], summary_md: str) -> Pack:
    os.makedirs(path, exist_ok=True)
    for eng, m in metrics.items():
        if tuple(m) != METRIC_NAMES:
            raise AssertionError(f"metrics of {eng} do not match BENCHMARKS.md's names")
    metrics = {e: {k: _finite(v) for k, v in m.items()} for e, m in metrics.items()}
    _dump(manifest, os.path.join(path, "manifest.json"))
    _dump(metrics, os.path.join(path, "metrics.json"))
    with open(os.path.join(path, "requests.jsonl"), "w") as f:
        for r in requests:
            f.write(json.dumps(r, default=str) + "\n")
    with open(os.path.join(path, "summary.md"), "w") as f:
        f.write(summary_md)
    return Pack(path, manifest, metrics, requests)


def load_pack(path: str) -> Pack:
    """Read a pack written by write_pack. Raises ValueError when it is not one."""
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a bench run directory")
    try:
        with open(os.path.join(path, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(path, "manifest.json")) as f:
            manifest = json.load(f)
    except FileNotFoundError as e:
        raise ValueError(f"{path} is not a complete evidence pack (no {os.path.basename(e.filename)})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise ValueError(f"{path}/metrics.json is not {{engine: {{metric: value}}}}")
    requests: list[dict[str, Any]] = []
    rp = os.path.join(path, "requests.jsonl")
    if os.path.isfile(rp):
        with open(rp) as f:
            requests = [json.loads(line) for line in f if line.strip()]
    return Pack(path, manifest, metrics, requests)
