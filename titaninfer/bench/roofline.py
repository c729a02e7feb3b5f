"""The roofline of a device (from its measured ceilings) with measured work placed on it.

A point is (FLOPs, bytes, seconds) of some piece of work: its arithmetic intensity is
FLOPs / bytes (x axis) and its achieved rate FLOPs / seconds (y axis). The roof is
min(compute, bandwidth * intensity). Points come from a pack (a whole run per engine, and
for TitanInfer its decode-only and prefill/mixed steps separately, from the recorded
steps) or from a profile (kernels whose FLOPs and bytes could be derived).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from titaninfer.bench.ceilings import Ceilings
from titaninfer.bench.engines.base import StepTiming
from titaninfer.bench.sol import ModelCost, step_cost


@dataclass(frozen=True)
class Point:
    label: str
    flops: float
    bytes: float
    time_s: float

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.time_s if self.time_s > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def step_points(engine: str, cost: ModelCost, steps: Sequence[StepTiming]) -> list[Point]:
    """Decode-only steps and steps with prefill work, each class summed into one point."""
    acc: dict[str, list[float]] = {}
    for st in steps:
        decode = all(c.num_tokens == 1 and c.context_len > 0 for c in st.chunks)
        key = f"{engine} decode steps" if decode else f"{engine} prefill/mixed steps"
        sc = step_cost(cost, st.chunks)
        a = acc.setdefault(key, [0.0, 0.0, 0.0])
        a[0] += sc.flops
        a[1] += sc.bytes
        a[2] += st.wall_s
    return [Point(k, *v) for k, v in acc.items() if v[2] > 0]


def plot_roofline(ceilings: Ceilings | dict, points: Sequence[Point], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = ceilings if isinstance(ceilings, Ceilings) else Ceilings.from_dict(ceilings)
    # Work without FLOPs (copies, elementwise) or without a time has no place on the chart.
    points = [p for p in points if p.flops > 0 and p.bytes > 0 and p.time_s > 0]
    ridge = c.ridge_flops_per_byte
    xs_pts = [p.intensity for p in points]
    lo = min([ridge / 1000, *[x / 4 for x in xs_pts]])
    hi = max([ridge * 100, *[x * 4 for x in xs_pts]])
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    roof = np.minimum(c.flops_per_s, c.bw_bytes_per_s * x)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.loglog(x, roof, "k-", lw=2,
              label=f"roof: {c.bw_bytes_per_s / 1e9:.0f} GB/s, {c.flops_per_s / 1e12:.2f} TFLOP/s {c.compute_dtype}")
    ax.axvline(ridge, color="grey", ls=":", lw=1)
    for p in points:
        frac = p.flops_per_s / min(c.flops_per_s, c.bw_bytes_per_s * p.intensity)
        ax.loglog([p.intensity], [p.flops_per_s], "o", ms=8, label=f"{p.label} ({frac * 100:.0f}% of roof)")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title or f"roofline: {c.device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
