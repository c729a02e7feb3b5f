"""`titaninfer` command line: generate | chat | serve | bench | profile | roofline.

A user mistake (missing file, bad parameter, unsupported model) ends with one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from titaninfer import __version__


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", "-m", default=None,
                   help="HF model folder, .gguf file or dummy:<shape> (default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    g.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, float16, bfloat16")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-num-seqs", type=int, default=256)
    g.add_argument("--max-num-batched-tokens", type=int, default=8192)
    g.add_argument("--max-model-len", type=int, default=0)
    g.add_argument("--kv-cache-bytes", type=int, default=None)
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument("--no-prefix-caching", action="store_true")
    g.add_argument("--eviction-policy", default="lru", help="lru, lfu, arc or s3fifo")
    g.add_argument("--scheduling-policy", default="fcfs", help="fcfs or priority")
    g.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    g.add_argument("--seed", type=int, default=0)


def engine_kwargs(args: argparse.Namespace) -> dict:
    return dict(device=args.device, dtype=args.dtype, block_size=args.block_size,
                max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                max_model_len=args.max_model_len, kv_cache_bytes=args.kv_cache_bytes,
                gpu_memory_utilization=args.gpu_memory_utilization,
                enable_prefix_caching=not args.no_prefix_caching, eviction_policy=args.eviction_policy,
                scheduling_policy=args.scheduling_policy, enforce_eager=args.enforce_eager, seed=args.seed)


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)


def _sampling(args: argparse.Namespace, seed: int | None):
    from titaninfer.types import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          seed=seed)


def _stream(engine, prompt_ids: list[int], params, out=sys.stdout) -> str:
    """Run one request to completion, printing text as it becomes final."""
    rid = engine.add_request(prompt_ids, params)
    shown = 0
    text = ""
    while engine.has_unfinished_requests():
        for o in engine.step():
            if o.request_id != rid:
                continue
            text = o.outputs[0].text
            out.write(text[shown:])
            out.flush()
            shown = len(text)
    out.write("\n")
    return text


def cmd_generate(args: argparse.Namespace) -> int:
    from titaninfer.engine import LLMEngine

    engine = LLMEngine.from_args(args.model, **engine_kwargs(args))
    tok = engine.tokenizer
    if tok is None:
        raise UserError("this model has no tokenizer (dummy weights); use `titaninfer bench` instead")
    if args.raw or not tok.chat_template:
        ids = tok.encode(args.prompt)
    else:
        ids = tok.encode_chat([{"role": "user", "content": args.prompt}])
    _stream(engine, ids, _sampling(args, args.seed if args.temperature > 0 else None))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from titaninfer.engine import LLMEngine

    engine = LLMEngine.from_args(args.model, **engine_kwargs(args))
    tok = engine.tokenizer
    if tok is None:
        raise UserError("this model has no tokenizer (dummy weights)")
    messages: list[dict] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        messages.append({"role": "user", "content": line})
        reply = _stream(engine, tok.encode_chat(messages), _sampling(args, args.seed if args.temperature > 0 else None))
        messages.append({"role": "assistant", "content": reply})
    return 0


_SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def register(name: str, help_text: str) -> Callable:
    """Decorator for modules that add a subcommand: fn(parser) configures it and sets
    `func` via parser.set_defaults(func=...)."""
    def deco(fn: Callable[[argparse.ArgumentParser], None]) -> Callable:
        _SUBCOMMANDS[name] = (help_text, fn)
        return fn
    return deco


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="titaninfer", description="TitanInfer LLM inference engine")
    parser.add_argument("--version", action="version", version=f"titaninfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="complete one prompt and print it")
    g.add_argument("prompt")
    g.add_argument("--raw", action="store_true", help="do not apply the chat template")
    _add_sampling_args(g)
    add_engine_args(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="chat in the terminal (streams replies)")
    c.add_argument("--system", default=None)
    _add_sampling_args(c)
    add_engine_args(c)
    c.set_defaults(func=cmd_chat)

    _load_plugins()
    for name, (help_text, fn) in _SUBCOMMANDS.items():
        fn(sub.add_parser(name, help=help_text))
    return parser


def _load_plugins() -> None:
    # Subcommands that live with their subsystem register themselves on import.
    import importlib

    for mod in ("titaninfer.server.cli", "titaninfer.bench.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not e.name.startswith("titaninfer"):
                raise


# The argument list of an in-process call (main([...]) from Python), so that records of the
# run (e.g. a benchmark's manifest) show the command it stands for, not the caller's argv.
invoked_argv: list[str] | None = None


def main(argv: Sequence[str] | None = None) -> int:
    global invoked_argv
    invoked_argv = list(argv) if argv is not None else None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as e:
        print(f"titaninfer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the importable module, not this __main__ copy: subcommand plugins
    # register themselves with titaninfer.cli, which would otherwise be a second module.
    from titaninfer.cli import main as _main

    sys.exit(_main())
