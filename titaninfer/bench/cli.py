"""Command line of the bench: `titaninfer bench {ceilings,latency,offline,serve,gate}`,
`titaninfer profile` and `titaninfer roofline`.

Imported by `titaninfer.cli._load_plugins()`; heavy imports (transformers, aiohttp,
matplotlib) happen inside the commands, and the server package is never imported, so the
bench runs where FastAPI is absent. Other bench modules add `bench` subcommands with
`register_bench(name, help)(fn)`; kernels.py and micro.py, which have their own
`main(argv)`, are reachable as `titaninfer bench kernels|micro ...` (imported on use).

User errors (unknown workload or model, bad parameter, unreachable endpoint) are raised as
ValueError / UserError: `titaninfer.cli.main` prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable

from titaninfer.cli import UserError, add_engine_args, engine_kwargs, register

_BENCH_SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def register_bench(name: str, help_text: str) -> Callable:
    """Decorator: fn(parser) configures `titaninfer bench <name>` and sets func."""
    def deco(fn: Callable[[argparse.ArgumentParser], None]) -> Callable:
        _BENCH_SUBCOMMANDS[name] = (help_text, fn)
        return fn
    return deco


# ---------------------------------------------------------------------------- ceilings
def cmd_ceilings(args: argparse.Namespace) -> int:
    import json

    from titaninfer.bench.ceilings import format_ceilings, get_ceilings
    from titaninfer.engine.engine import _pick_device

    _apply_threads(args)
    c = get_ceilings(_pick_device(args.device), refresh=args.refresh)
    print(json.dumps(c.to_dict(), indent=2) if args.json else format_ceilings(c))
    return 0


# ---------------------------------------------------------------------------- runs
def _add_workload_args(p: argparse.ArgumentParser, default_workload: str, mode: str) -> None:
    from titaninfer.bench.workloads import STANDARD_WORKLOADS

    g = p.add_argument_group("workload")
    g.add_argument("--workload", "-w", default=default_workload,
                   help=f"standard workload: {', '.join(STANDARD_WORKLOADS)} (default {default_workload})")
    g.add_argument("--num-requests", "-n", type=int, default=None)
    g.add_argument("--input-len", type=int, default=None, help="fixed prompt length")
    g.add_argument("--input-len-range", default=None, metavar="LO:HI", help="prompt lengths uniform in [LO, HI]")
    g.add_argument("--output-len", type=int, default=None, help="fixed output length")
    g.add_argument("--output-len-range", default=None, metavar="LO:HI")
    g.add_argument("--request-rate", type=float, default=None, help="requests/s, Poisson (serve); inf: all at once")
    g.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight at once")
    g.add_argument("--prefix-len", type=int, default=None, help="shared-prefix: tokens each group shares")
    g.add_argument("--num-groups", type=int, default=None, help="shared-prefix: number of groups")
    g.add_argument("--no-ignore-eos", action="store_true", help="stop at EOS (default: ignore it)")

    r = p.add_argument_group("engines and output")
    r.add_argument("--engines", "-e", default="openai" if mode == "serve" else "titaninfer",
                   help="comma list of titaninfer, hf (continuous batching offline), hf-generate "
                        "(padded batched generate offline), openai (side by side, same workload and seed)")
    r.add_argument("--endpoint", default=None, help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000")
    r.add_argument("--served-model-name", default=None, help="the request's model field (default: GET /v1/models)")
    r.add_argument("--prompt-format", default="ids", help="ids (token-id prompts, exact) or text (approximate)")
    r.add_argument("--api-key", default=None)
    r.add_argument("--vocab-size", type=int, default=32000, help="prompt ids range when the model is unknown")
    r.add_argument("--out", "-o", default=None, help="pack directory (default runs/<timestamp>-<name>)")
    r.add_argument("--name", default=None, help="run name (default <mode>-<workload>)")
    r.add_argument("--results-dir", default=None,
                   help="also copy summary.md here as <name>[-<model>].md (e.g. benchmarks/results)")
    r.add_argument("--baseline", default=None, help="a previous pack: compare in summary.md")
    r.add_argument("--tolerance", default="5%", help="for --baseline (default 5%%)")
    r.add_argument("--no-sol", action="store_true", help="skip ceilings and speed of light")
    r.add_argument("--refresh-ceilings", action="store_true", help="measure the device again")
    r.add_argument("--no-progress", action="store_true")
    _add_threads_arg(r)


def _add_threads_arg(g: argparse._ActionsContainer) -> None:
    g.add_argument("--cpu-threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice); on a shared CPU host use the "
                        "number of idle cores: oversubscribed OpenMP threads slow every op many-fold")


def _apply_threads(args: argparse.Namespace) -> None:
    if args.cpu_threads is not None:
        if args.cpu_threads < 1:
            raise UserError(f"--cpu-threads must be >= 1, got {args.cpu_threads}")
        import torch

        torch.set_num_threads(args.cpu_threads)


def _model_slug(model: str | None) -> str:
    if not model:
        return "default"
    base = model.removeprefix("dummy:")
    return os.path.basename(os.path.normpath(base)).replace(".gguf", "").replace(":", "-")


def _make_cmd(mode: str) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        from titaninfer.bench.gate import parse_tolerance
        from titaninfer.bench.runner import BenchOptions, parse_engines, print_result, run_bench
        from titaninfer.bench.workloads import apply_overrides, get_workload

        spec = apply_overrides(
            get_workload(args.workload), num_requests=args.num_requests, input_len=args.input_len,
            input_len_range=args.input_len_range, output_len=args.output_len,
            output_len_range=args.output_len_range, request_rate=args.request_rate, seed=args.seed,
            max_concurrency=args.max_concurrency, prefix_len=args.prefix_len, num_groups=args.num_groups)
        if args.no_ignore_eos:
            spec = spec.replace(ignore_eos=False)
        if mode != "serve" and args.request_rate is not None and not math.isinf(args.request_rate):
            raise UserError(f"--request-rate applies to `bench serve`; `bench {mode}` "
                            f"{'runs one request at a time' if mode == 'latency' else 'submits all at once'}")
        engines = parse_engines(args.engines)
        tolerance = parse_tolerance(args.tolerance)
        _apply_threads(args)
        models = [m.strip() for m in args.model.split(",")] if args.model else [None]
        regressions = 0
        for model in models:
            multi = len(models) > 1
            name = (args.name or f"{mode}-{spec.name}") + (f"-{_model_slug(model)}" if multi else "")
            out = os.path.join(args.out, _model_slug(model)) if args.out and multi else args.out
            opts = BenchOptions(
                mode=mode, workload=spec, engines=engines, model=model,
                engine_kwargs=engine_kwargs(args), endpoint=args.endpoint,
                served_model_name=args.served_model_name, prompt_format=args.prompt_format,
                api_key=args.api_key, vocab_size=args.vocab_size, out=out, name=name,
                progress=not args.no_progress, baseline=args.baseline, tolerance=tolerance,
                measure_ceilings=not args.no_sol, refresh_ceilings=args.refresh_ceilings)
            try:
                pack, n_reg = run_bench(opts)
            except OSError as e:
                raise UserError(f"{type(e).__name__}: {e}") from None
            regressions += n_reg
            if multi:
                print(f"\n== {model}")
            print(print_result(pack))
            if args.results_dir:
                import shutil

                os.makedirs(args.results_dir, exist_ok=True)
                dst = os.path.join(args.results_dir, f"{name}.md")
                shutil.copyfile(os.path.join(pack.path, "summary.md"), dst)
                print(f"summary copied to {dst}")
        if regressions:
            print(f"{regressions} regression(s) against {args.baseline}", file=sys.stderr)
        return 0
    return cmd


# ---------------------------------------------------------------------------- gate
def cmd_gate(args: argparse.Namespace) -> int:
    from titaninfer.bench.gate import compare, format_table, parse_tolerance
    from titaninfer.bench.pack import load_pack

    tol = parse_tolerance(args.tolerance)
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    rows = compare(load_pack(args.baseline), load_pack(args.current), tol, metrics)
    print(format_table(rows, tol))
    return 1 if any(r.regressed for r in rows) else 0


# ---------------------------------------------------------------------------- profile / roofline
def cmd_profile(args: argparse.Namespace) -> int:
    import numpy as np

    from titaninfer.bench.ceilings import get_ceilings
    from titaninfer.bench.pack import default_run_dir
    from titaninfer.bench.profile import format_rows, profile_engine, write_profile_json
    from titaninfer.engine import LLMEngine

    for flag in ("num_requests", "input_len", "output_len", "steps"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1")
    _apply_threads(args)
    # Under programmatic dependent launch a kernel starts before its predecessor ends and
    # its recorded time includes that wait: per-kernel times would overlap and mislead.
    saved_pdl = os.environ.get("TITANINFER_PDL")
    os.environ["TITANINFER_PDL"] = "1" if args.pdl else "0"
    try:
        engine = LLMEngine.from_args(args.model, **engine_kwargs(args))
        rng = np.random.default_rng(args.seed)
        vocab = engine.model_config.vocab_size
        prompts = [rng.integers(min(100, vocab // 2), vocab, args.input_len).tolist()
                   for _ in range(args.num_requests)]
        out = args.out or default_run_dir("profile")
        res = profile_engine(engine, prompts, args.output_len, args.steps, args.warmup_steps, out)
    finally:
        if saved_pdl is None:
            os.environ.pop("TITANINFER_PDL", None)
        else:
            os.environ["TITANINFER_PDL"] = saved_pdl
    ceil = None if args.no_sol else get_ceilings(engine.config.device)
    path = write_profile_json(res, ceil.to_dict() if ceil else None,
                              {"model": engine.config.model, "device": engine.config.device,
                               "dtype": str(engine.config.dtype).removeprefix("torch."),
                               "num_requests": args.num_requests, "input_len": args.input_len,
                               "output_len": args.output_len})
    walls = res.step_wall_s
    if not args.pdl:
        print("programmatic dependent launch off for this profile (--pdl keeps it on; kernel times then overlap)")
    print(f"{len(walls)} steps profiled, mean {np.mean(walls) * 1e3:.2f} ms/step, "
          f"{np.mean(res.step_tokens) if res.step_tokens else 0:.1f} tokens/step; shares are of step wall time")
    print(format_rows(res.rows, args.top))
    if res.matmul_ops:
        print("\nmatmul operators (rates derived from shapes):")
        print(format_rows(res.matmul_ops, args.top))
    print(f"\ntrace: {os.path.join(out, 'trace.json')}\ntable: {path}")
    return 0


def cmd_roofline(args: argparse.Namespace) -> int:
    import json

    from titaninfer.bench.ceilings import get_ceilings
    from titaninfer.bench.roofline import Point, plot_roofline

    if bool(args.pack) == bool(args.profile):
        raise UserError("give exactly one of --pack DIR or --profile DIR")
    src = args.pack or args.profile
    name = "manifest.json" if args.pack else "kernels.json"
    try:
        with open(os.path.join(src, name)) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {os.path.join(src, name)}: {e}") from None
    ceil = data.get("ceilings")
    if ceil is None:
        ceil = get_ceilings(data.get("device") or "cpu").to_dict()
    if args.pack:
        points = [Point(**p) for s in (data.get("sol") or {}).values() for p in s.get("points", [])]
    else:
        points = [Point(r["name"][:40], r["flops"] or 0.0, r["bytes"], r["time_s"])
                  for r in data["rows"] + data.get("matmul_ops", []) if r.get("bytes") and r.get("flops")][: args.top]
    if not points:
        raise UserError(f"{src} has no work with known FLOPs and bytes to place on the roofline")
    out = args.out or os.path.join(src, "roofline.png")
    plot_roofline(ceil, points, out)
    print(f"roofline: {out} ({len(points)} points)")
    return 0


# ---------------------------------------------------------------------------- registration
@register("bench", "benchmarks: ceilings | latency | offline | serve | gate (writes evidence packs)")
def _bench_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench_command", required=True)
    c = sub.add_parser("ceilings", help="measure (and cache) the device's bandwidth and compute ceilings")
    c.add_argument("--device", default="auto")
    c.add_argument("--refresh", action="store_true", help="measure again even if cached")
    c.add_argument("--json", action="store_true")
    _add_threads_arg(c)
    c.set_defaults(func=cmd_ceilings)
    for mode, workload, help_text in (
            ("latency", "decode-latency", "requests one at a time (batch 1): TTFT, TPOT, ITL"),
            ("offline", "offline-random", "all requests at once: throughput"),
            ("serve", "serving-sharegpt-like", "drive an OpenAI-compatible endpoint with Poisson arrivals")):
        sp = sub.add_parser(mode, help=help_text)
        _add_workload_args(sp, workload, mode)
        add_engine_args(sp)
        sp.set_defaults(func=_make_cmd(mode))
    g = sub.add_parser("gate", help="compare two packs; exit 1 on a regression beyond the tolerance")
    g.add_argument("--baseline", required=True)
    g.add_argument("--current", required=True)
    g.add_argument("--tolerance", default="5%")
    g.add_argument("--metrics", default=None, help="comma list (default: every gated metric)")
    g.set_defaults(func=cmd_gate)
    for name, (help_text, fn) in _BENCH_SUBCOMMANDS.items():
        fn(sub.add_parser(name, help=help_text))
    _add_sibling_commands(sub)


@register("profile", "torch.profiler trace of N engine steps and the top kernels")
def _profile_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-requests", "-n", type=int, default=8)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="engine steps to profile")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", "-o", default=None)
    p.add_argument("--no-sol", action="store_true", help="do not measure ceilings")
    p.add_argument("--pdl", action="store_true",
                   help="keep programmatic dependent launch on (off by default here: with it, each "
                        "kernel's time includes waiting for the kernel before it)")
    _add_threads_arg(p)
    add_engine_args(p)
    p.set_defaults(func=cmd_profile)


@register("roofline", "roofline PNG of the device with a pack's steps or a profile's kernels")
def _roofline_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", default=None, help="evidence pack directory")
    p.add_argument("--profile", default=None, help="`titaninfer profile` output directory")
    p.add_argument("--top", type=int, default=12, help="kernels to place (profile)")
    p.add_argument("--out", "-o", default=None, help="PNG path (default: <dir>/roofline.png)")
    p.set_defaults(func=cmd_roofline)


def _passthrough(module: str) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        mod = importlib.import_module(module)
        rc = mod.main(args.rest)
        return int(rc or 0)
    return cmd


def _add_sibling_commands(sub: argparse._SubParsersAction) -> None:
    """`titaninfer bench kernels|micro ...` run the sibling modules' own `main(argv)`
    (owned by the kernel and prefix-cache subsystems); imported only when invoked."""
    for name, module, help_text in (
            ("kernels", "titaninfer.bench.kernels", "kernel micro-benchmarks vs the roofline (GPU)"),
            ("micro", "titaninfer.bench.micro", "prefix-cache / KV pool / eviction micro-benchmarks")):
        if name in _BENCH_SUBCOMMANDS or importlib.util.find_spec(module) is None:
            continue
        # prefix_chars="+": every "-..." argument is passed through untouched, --help included.
        sp = sub.add_parser(name, help=f"{help_text} (python -m {module}; args pass through)",
                            add_help=False, prefix_chars="+")
        sp.add_argument("rest", nargs="*")
        sp.set_defaults(func=_passthrough(module))
