"""summary.md of a pack, and the same side-by-side table for the terminal.

One row per metric, one column per engine, and `titaninfer/<peer>` ratio columns when
TitanInfer ran beside peers (for lower-is-better metrics a ratio < 1 means TitanInfer is
better; the arrow after the metric name says which way is better).
"""

from __future__ import annotations

from typing import Any

from titaninfer.bench.metrics import HIGHER_IS_BETTER, METRIC_NAMES


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def side_by_side(metrics: dict[str, dict[str, Any]], markdown: bool = True) -> str:
    engines = list(metrics)
    peers = [e for e in engines if e != "titaninfer"] if "titaninfer" in engines else []
    cols = ["metric", *engines, *[f"titaninfer/{p}" for p in peers]]
    rows: list[list[str]] = []
    for name in METRIC_NAMES:
        arrow = "↑" if name in HIGHER_IS_BETTER else "↓"
        row = [f"{name} {arrow}", *[fmt(metrics[e].get(name)) for e in engines]]
        row += [_ratio(metrics["titaninfer"].get(name), metrics[p].get(name)) for p in peers]
        rows.append(row)
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    return "\n".join([line(cols), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def render_summary(manifest: dict[str, Any], metrics: dict[str, dict[str, Any]], notes: list[str],
                   gate_md: str | None = None) -> str:
    m, w = manifest["model"], manifest["workload"]
    ceil = manifest.get("ceilings")
    gpu = manifest["host"]["gpu"]
    if manifest["mode"] == "latency":
        rate = "one at a time"
    elif manifest["mode"] == "offline" or w.get("request_rate") is None:
        rate = "all at once"
    else:
        rate = f"Poisson {w['request_rate']} req/s"
    lines = [
        f"# titaninfer bench {manifest['mode']}: {w['name']}",
        "",
        f"- command: `{manifest['command']}`",
        f"- git: {manifest['git'].get('sha')}{' (dirty)' if manifest['git'].get('dirty') else ''}",
        f"- model: {m['name']} ({m['architecture']}, {m['dtype']}, {m['num_params'] / 1e6:.1f}M params, "
        f"weights: {m['weights_source']})",
        f"- workload: {w['num_requests_run']} requests, prompt {w['input_len'][0]}-{w['input_len'][1]}, "
        f"output {w['output_len'][0]}-{w['output_len'][1]} tokens, {rate}, seed {w['seed']}, "
        f"ignore EOS {w['ignore_eos']}, max concurrency "
        f"{1 if manifest['mode'] == 'latency' else w.get('max_concurrency') or 'unbounded'}",
        f"- device: {gpu['name'] or manifest['host']['cpu']} "
        f"(torch {manifest['host']['versions']['torch']}, transformers {manifest['host']['versions']['transformers']})",
    ]
    if ceil:
        lines.append(f"- ceilings: {ceil['bw_bytes_per_s'] / 1e9:.1f} GB/s copy, "
                     f"{ceil['flops_per_s'] / 1e12:.3f} TFLOP/s {ceil['compute_dtype']} matmul")
    lines += ["", "## Results", "", side_by_side(metrics), ""]
    sol = manifest.get("sol") or {}
    if sol:
        lines += ["## Speed of light", ""]
        for eng, s in sol.items():
            ratio = metrics.get(eng, {}).get("sol_ratio")
            lines.append(
                f"- {eng}: floor {s['speed_of_light_s']:.4g} s over {s['num_steps']} {s['source']} steps "
                f"({s['num_compute_bound_steps']} compute-bound), {s['total_bytes'] / 1e9:.3g} GB moved, "
                f"{s['total_flops'] / 1e12:.3g} TFLOP; sol_ratio {fmt(ratio)} "
                f"(1.0 = the device's measured limit)")
        lines.append("")
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    if gate_md:
        lines += ["## Against the baseline", "", gate_md, ""]
    return "\n".join(lines)
