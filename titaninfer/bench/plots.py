"""Pictures for a pack: latency CDFs (TTFT, ITL, end-to-end) and throughput (rates per
engine and cumulative output tokens over time). One line or bar per engine."""

from __future__ import annotations

import os

from titaninfer.bench.engines.base import EngineRun


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines
    import matplotlib.pyplot as plt

    return plt


def latency_cdfs(runs: list[EngineRun], path: str) -> None:
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (title, get) in zip(axes, (
            ("TTFT", lambda r: [x.ttft_s for x in r.records if x.ok and x.ttft_s is not None]),
            ("inter-token latency", lambda r: [g for x in r.records if x.ok for g in x.itl_s]),
            ("end-to-end latency", lambda r: [x.e2e_s for x in r.records if x.ok and x.e2e_s is not None])), strict=True):
        for run in runs:
            v = np.sort(np.asarray(get(run), dtype=float)) * 1e3
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=run.engine, drawstyle="steps-post")
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests" if title != "inter-token latency" else "fraction of gaps")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def throughput(runs: list[EngineRun], metrics: dict[str, dict], path: str) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    names = [r.engine for r in runs]
    vals = [metrics[n]["output_tok_per_s"] or 0.0 for n in names]
    bars = ax1.bar(names, vals, color=["C0", "C1", "C2", "C3"][: len(names)])
    ax1.bar_label(bars, fmt="%.1f")
    ax1.set_ylabel("output tokens / s")
    ax1.set_title("throughput")
    for run in runs:
        times = sorted(t for x in run.records if x.ok for t in x.token_times_s)
        if times:
            ax2.plot(times, range(1, len(times) + 1), label=run.engine)
    ax2.set_xlabel("s since first request")
    ax2.set_ylabel("output tokens so far")
    ax2.set_title("tokens over time")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(runs: list[EngineRun], metrics: dict[str, dict], out_dir: str) -> list[str]:
    """Returns notes about plots that could not be drawn (never raises for a missing matplotlib)."""
    try:
        _plt()
    except ImportError:
        return ["plots skipped: matplotlib is not installed"]
    latency_cdfs(runs, os.path.join(out_dir, "latency_cdf.png"))
    throughput(runs, metrics, os.path.join(out_dir, "throughput.png"))
    return []
