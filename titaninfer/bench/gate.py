"""The performance gate: compare two evidence packs metric by metric.

For every engine present in both packs and every gated metric known in both, the relative
change is (current - baseline) / |baseline|. A higher-is-better metric regresses when it
falls by more than the tolerance, a lower-is-better one when it rises by more than it.
A lower-is-better counter with a zero baseline (preemptions) regresses on any increase.
Metrics that are facts of the run rather than quality (KV blocks, the floor itself) are
shown but never gated. The gate passes iff no row regresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from titaninfer.bench.metrics import HIGHER_IS_BETTER, METRIC_NAMES, NOT_GATED
from titaninfer.bench.pack import Pack


@dataclass(frozen=True)
class GateRow:
    engine: str
    metric: str
    baseline: float | None
    current: float | None
    change: float | None  # relative; None when either side is unknown
    higher_is_better: bool
    status: str  # ok | REGRESSION | improved | skipped

    @property
    def regressed(self) -> bool:
        return self.status == "REGRESSION"


def parse_tolerance(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05. Raises ValueError."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"bad tolerance {text!r}; use e.g. 5% or 0.05") from None
    if not 0 <= v < 1:
        raise ValueError(f"tolerance must be in [0%, 100%), got {text}")
    return v


def compare(baseline: Pack, current: Pack, tolerance: float,
            metrics: list[str] | None = None) -> list[GateRow]:
    names = metrics or list(METRIC_NAMES)
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}")
    engines = [e for e in current.engines if e in baseline.engines]
    if not engines:
        raise ValueError(f"the packs share no engine (baseline: {baseline.engines}, current: {current.engines})")
    rows: list[GateRow] = []
    for eng in engines:
        for name in names:
            b, c = baseline.metrics[eng].get(name), current.metrics[eng].get(name)
            hib = name in HIGHER_IS_BETTER
            if b is None or c is None or name in NOT_GATED:
                change = None if b is None or c is None or b == 0 else (c - b) / abs(b)
                rows.append(GateRow(eng, name, b, c, change, hib, "skipped"))
                continue
            if b == 0:
                change = 0.0 if c == 0 else float("inf") * (1 if c > 0 else -1)
            else:
                change = (c - b) / abs(b)
            worse = -change if hib else change
            status = "REGRESSION" if worse > tolerance else "improved" if worse < -tolerance else "ok"
            rows.append(GateRow(eng, name, b, c, change, hib, status))
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_table(rows: list[GateRow], tolerance: float) -> str:
    head = f"{'engine':<11} {'metric':<19} {'baseline':>11} {'current':>11} {'change':>9}  better  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        ch = "-" if r.change is None else f"{r.change * 100:+.1f}%"
        lines.append(f"{r.engine:<11} {r.metric:<19} {_fmt(r.baseline):>11} {_fmt(r.current):>11} {ch:>9}  "
                     f"{'higher' if r.higher_is_better else 'lower ':<6}  {r.status}")
    n = sum(r.regressed for r in rows)
    lines.append(f"tolerance {tolerance * 100:.1f}%: " + (f"{n} regression(s)" if n else "no regression"))
    return "\n".join(lines)


def format_markdown(rows: list[GateRow], tolerance: float) -> str:
    out = ["| engine | metric | baseline | current | change | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        ch = "-" if r.change is None else f"{r.change * 100:+.1f}%"
        out.append(f"| {r.engine} | {r.metric} | {_fmt(r.baseline)} | {_fmt(r.current)} | {ch} | {r.status} |")
    n = sum(r.regressed for r in rows)
    out.append("")
    out.append(f"Tolerance {tolerance * 100:.1f}%: " + (f"**{n} regression(s)**" if n else "no regression"))
    return "\n".join(out)
