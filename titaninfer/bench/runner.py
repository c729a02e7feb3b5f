"""One `titaninfer bench latency|offline|serve` invocation, end to end:

    options -> model shapes -> concrete workload (seeded) -> ceilings (cached)
    -> each engine in turn: warm up, run, records  (titaninfer, then hf on the same weights
       once TitanInfer's KV cache is freed, then the endpoint)
    -> speed of light per engine -> metrics -> plots -> evidence pack -> summary table

Engines always run in that order (whatever order --engines lists them, which is only the
table's column order) because hf borrows TitanInfer's weight tensors.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from titaninfer.bench import plots
from titaninfer.bench.ceilings import Ceilings, get_ceilings
from titaninfer.bench.engines.base import MODES, EngineRun
from titaninfer.bench.gate import compare, format_markdown
from titaninfer.bench.hostinfo import command_line, git_state, host_info
from titaninfer.bench.metrics import EngineStatsSummary, compute_metrics
from titaninfer.bench.pack import Pack, default_run_dir, load_pack, write_pack
from titaninfer.bench.roofline import Point, plot_roofline, step_points
from titaninfer.bench.sol import ModelCost, SolResult, simulate_schedule, speed_of_light
from titaninfer.bench.summary import render_summary, side_by_side
from titaninfer.bench.workloads import Workload, WorkloadSpec, materialize
from titaninfer.config import ModelConfig, parse_dtype

ENGINES = ("titaninfer", "hf", "hf-generate", "openai")
HF_ENGINES = ("hf", "hf-generate")


@dataclass
class BenchOptions:
    mode: str
    workload: WorkloadSpec
    engines: list[str]
    model: str | None
    engine_kwargs: dict[str, Any]
    endpoint: str | None = None
    served_model_name: str | None = None
    prompt_format: str = "ids"
    api_key: str | None = None
    vocab_size: int = 32000  # openai-only runs without --model
    out: str | None = None
    name: str | None = None
    progress: bool = True
    baseline: str | None = None
    tolerance: float = 0.05
    measure_ceilings: bool = True
    refresh_ceilings: bool = False
    notes: list[str] = field(default_factory=list)


def parse_engines(text: str) -> list[str]:
    names = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in names if e not in ENGINES]
    if bad or not names:
        raise ValueError(f"unknown engine {', '.join(bad) or repr(text)}; choose from {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def validate(opts: BenchOptions) -> None:
    if opts.mode not in MODES:
        raise ValueError(f"unknown mode {opts.mode!r}")
    if "openai" in opts.engines and not opts.endpoint:
        raise ValueError("the openai engine needs --endpoint URL")
    if opts.endpoint and "openai" not in opts.engines:
        raise ValueError("--endpoint is given but --engines does not include openai")
    if opts.mode == "serve" and any(e in HF_ENGINES for e in opts.engines):
        raise ValueError("the hf engine runs latency and offline only (serve drives an endpoint)")
    if opts.prompt_format not in ("ids", "text"):
        raise ValueError(f"--prompt-format must be ids or text, got {opts.prompt_format!r}")


def _config_only(model: str | None) -> ModelConfig | None:
    """Shapes of a model without loading its weights (for endpoint-only runs)."""
    if model is None:
        return None
    from titaninfer.loader import dummy
    from titaninfer.loader.model_loader import resolve_model_spec
    from titaninfer.loader.safetensors_folder import read_hf_config

    kind, where = resolve_model_spec(model)
    if kind == "dummy":
        return ModelConfig.from_hf(dummy.dummy_hf_config(where), name=model)
    if kind == "hf":
        return ModelConfig.from_hf(read_hf_config(where), name=model)
    from titaninfer.loader.gguf_file import read_gguf

    return ModelConfig.from_hf(read_gguf(where).hf_config, name=model)


def _device(opts: BenchOptions) -> str:
    dev = opts.engine_kwargs.get("device") or "auto"
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def _model_info(cfg: ModelConfig | None, dtype: torch.dtype, loaded: Any, spec: str | None) -> dict[str, Any]:
    if cfg is None:
        return {"name": spec or "unknown (endpoint)", "architecture": "unknown", "dtype": "unknown",
                "weights_source": "remote endpoint", "weights_sha256": None, "num_params": 0}
    source = getattr(loaded, "source", None) or ("dummy" if (spec or "").startswith("dummy:") else "shapes only")
    return {
        "name": spec or cfg.name or "default:SmolLM2-135M-Instruct",
        "architecture": cfg.architecture,
        "dtype": str(dtype).removeprefix("torch."),
        "weights_source": source,
        "weights_sha256": getattr(loaded, "weights_sha256", None),
        "num_params": cfg.num_params(),
        "shape": {"num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
                  "intermediate_size": cfg.intermediate_size, "num_heads": cfg.num_heads,
                  "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim, "vocab_size": cfg.vocab_size,
                  "max_position_embeddings": cfg.max_position_embeddings},
    }


def _sol(run: EngineRun, cost: ModelCost | None, ceil: Ceilings | None, opts: BenchOptions,
         workload: Workload) -> tuple[SolResult | None, list[Point]]:
    if cost is None or ceil is None:
        return None, []
    if run.steps:
        res = speed_of_light(cost, [s.chunks for s in run.steps], ceil.bw_bytes_per_s, ceil.flops_per_s, "recorded")
        points = step_points(run.engine, cost, run.steps)
    else:
        ok = [r for r in run.records if r.ok]
        steps = simulate_schedule([r.prompt_len for r in ok], [max(1, r.output_len) for r in ok],
                                  opts.engine_kwargs.get("max_num_batched_tokens", 8192),
                                  opts.engine_kwargs.get("max_num_seqs", 256), sequential=run.mode == "latency")
        res = speed_of_light(cost, steps, ceil.bw_bytes_per_s, ceil.flops_per_s, "reconstructed")
        points = []
    points.append(Point(f"{run.engine} whole run", res.total_flops, res.total_bytes, run.duration_s))
    return res, points


def run_bench(opts: BenchOptions) -> tuple[Pack, int]:
    """Runs the benchmark and writes the pack; returns (pack, number of gate regressions
    against --baseline, 0 without one)."""
    validate(opts)
    device = _device(opts)
    notes = list(opts.notes)
    ek = opts.engine_kwargs
    tb = loaded = None
    cfg: ModelConfig | None
    dtype = parse_dtype(ek.get("dtype", "auto"), device)
    if "titaninfer" in opts.engines:
        from titaninfer.bench.engines.titaninfer import TitanInferEngine

        tb = TitanInferEngine(opts.model, ek)
        loaded, cfg, dtype = tb.loaded, tb.model_config, tb.dtype
        max_model_len = tb.engine.max_model_len
    elif any(e in HF_ENGINES for e in opts.engines):
        from titaninfer.loader import load_model

        loaded = load_model(opts.model, device=device, dtype=dtype, seed=ek.get("seed", 0))
        cfg = loaded.config
        max_model_len = ek.get("max_model_len") or cfg.max_position_embeddings
    else:
        cfg = _config_only(opts.model)
        max_model_len = (ek.get("max_model_len") or cfg.max_position_embeddings) if cfg else 1 << 30
        if cfg is None:
            notes.append("no --model given for the endpoint: prompts use --vocab-size ids, no speed of light")
    model_info = _model_info(cfg, dtype, loaded, opts.model)
    workload = materialize(opts.workload, cfg.vocab_size if cfg else opts.vocab_size, max_model_len)
    notes += workload.notes

    ceil: Ceilings | None = None
    if opts.measure_ceilings:
        ceil = get_ceilings(device, refresh=opts.refresh_ceilings)
        if "openai" in opts.engines:
            notes.append("ceilings are this host's: the endpoint's sol_ratio is meaningful only if it serves "
                         f"from this host's {device}")
    cost = ModelCost.from_config(cfg, torch.tensor([], dtype=dtype).element_size()) if cfg else None

    runs: dict[str, EngineRun] = {}
    t_start = time.time()
    load_before = _loadavg()
    if tb is not None:
        runs["titaninfer"] = tb.run(workload, opts.mode, opts.progress)
        tb.release_engine()  # the KV cache goes; the weights stay for hf
    for name in (e for e in HF_ENGINES if e in opts.engines):
        runs[name] = _run_hf(name, opts, loaded, cfg, device, dtype, workload, tb)
    if tb is not None:
        tb.close()
    loaded = None
    gc.collect()
    if "openai" in opts.engines:
        from titaninfer.bench.engines.openai import OpenAIEngine
        from titaninfer.bench.serve_client import ClientConfig, normalize_endpoint

        assert opts.endpoint is not None
        client = ClientConfig(normalize_endpoint(opts.endpoint), opts.served_model_name, opts.prompt_format,
                              api_key=opts.api_key)
        runs["openai"] = OpenAIEngine(client).run(workload, opts.mode, opts.progress)

    load_after = _loadavg()
    cores = os.cpu_count() or 1
    if max(load_before, load_after) > cores + 0.5:
        # More runnable threads than cores (ours included): host-side timings, i.e. all of them on
        # a CPU, are inflated, OpenMP ops many-fold (see --cpu-threads).
        notes.append(f"HOST WAS BUSY: load average {load_before:.1f} before / {load_after:.1f} after "
                     f"on {cores} cores (torch threads {torch.get_num_threads()}); timings are not trustworthy")
    ordered = [runs[e] for e in opts.engines]
    metrics: dict[str, dict[str, Any]] = {}
    sol_info: dict[str, Any] = {}
    points: list[Point] = []
    for run in ordered:
        res, pts = _sol(run, cost, ceil, opts, workload)
        metrics[run.engine] = compute_metrics(run.records, run.duration_s, run.stats or EngineStatsSummary(),
                                              res.speed_of_light_s if res else None)
        if res:
            sol_info[run.engine] = {**res.to_dict(), "points": [p.to_dict() for p in pts]}
        points += pts
        notes += run.notes
        failed = [r for r in run.records if not r.ok]
        if failed:
            notes.append(f"{run.engine}: {len(failed)} request(s) did not finish: {failed[0].error}")

    name = opts.name or f"{opts.mode}-{opts.workload.name}"
    path = opts.out or default_run_dir(name)
    manifest = {
        "schema": "titaninfer-bench/1",
        "name": name,
        "mode": opts.mode,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
        "command": command_line(),
        "git": git_state(),
        "engines": opts.engines,
        "engine_config": {e: r.config for e, r in runs.items()},
        "bench_engine_args": ek,
        "model": model_info,
        "workload": {**workload.spec.to_dict(), "num_requests_run": len(workload.requests),
                     "total_prompt_tokens": workload.total_prompt_tokens,
                     "total_output_tokens": workload.total_output_tokens},
        "host": host_info(),
        "device": device,
        "ceilings": ceil.to_dict() if ceil else None,
        "load_average_1m": {"before": load_before, "after": load_after},
        "sol": sol_info,
        "notes": notes,
        "baseline": opts.baseline,
    }
    os.makedirs(path, exist_ok=True)
    notes += plots.write_plots(ordered, metrics, path)
    if ceil and points:
        plot_roofline(ceil, points, os.path.join(path, "roofline.png"), f"roofline: {ceil.device} ({name})")
    gate_md, regressions = None, 0
    if opts.baseline:
        rows = compare(load_pack(opts.baseline), Pack(path, manifest, metrics), opts.tolerance)
        regressions = sum(r.regressed for r in rows)
        gate_md = format_markdown(rows, opts.tolerance)
    requests = [rec.to_json(run.engine) for run in ordered for rec in run.records]
    pack = write_pack(path, manifest, metrics, requests, render_summary(manifest, metrics, notes, gate_md))
    return pack, regressions


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _run_hf(name: str, opts: BenchOptions, loaded: Any, cfg: ModelConfig | None, device: str, dtype: torch.dtype,
            workload: Workload, tb: Any) -> EngineRun:
    from titaninfer.bench.engines.hf import HFEngine
    from titaninfer.bench.engines.hf_weights import hf_model_from_folder, hf_model_from_ours
    from titaninfer.loader.model_loader import resolve_model_spec

    assert cfg is not None
    kind, where = resolve_model_spec(opts.model)
    if kind == "hf":
        if tb is not None and tb.loaded is not None:
            tb.close()  # our copy of the weights is not needed: transformers loads the folder
        model = hf_model_from_folder(where, device, dtype)
    else:
        model = hf_model_from_ours(loaded.model, cfg, device, dtype)
    ek = opts.engine_kwargs
    eng = HFEngine(model, device, dtype, ek.get("max_num_seqs", 256), ek.get("max_num_batched_tokens", 8192),
                   pad_token_id=(cfg.eos_token_ids or (0,))[0], name=name)
    try:
        return eng.run(workload, opts.mode, opts.progress)
    finally:
        eng.close()


def print_result(pack: Pack) -> str:
    return side_by_side(pack.metrics, markdown=False) + f"\n\nevidence pack: {pack.path}"
