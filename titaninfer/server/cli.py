"""`titaninfer serve`: the OpenAI-compatible HTTP server (registers itself with titaninfer.cli).

    titaninfer serve [--model M] [--host 127.0.0.1] [--port 8000] [--api-key K] [engine args]

Binds to loopback unless --host says otherwise. The API key comes from --api-key or the
TITANINFER_API_KEY environment variable; without one the server is open.
"""

from __future__ import annotations

import argparse
import logging

from titaninfer import env
from titaninfer.cli import UserError, add_engine_args, engine_kwargs, register


@register("serve", "serve the model over an OpenAI-compatible HTTP API")
def configure(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    g.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    g.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' "
                   "(default: $TITANINFER_API_KEY; no key: open)")
    g.add_argument("--served-model-name", default=None, help="the model id clients use (default: from --model)")
    g.add_argument("--max-waiting-requests", type=int, default=1024,
                   help="sequences that may wait beyond --max-num-seqs; more get 429")
    g.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens a request may ask for")
    g.add_argument("--max-n", type=int, default=16, help="largest n a request may ask for")
    g.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="larger bodies get 413")
    g.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds in-flight requests get to finish")
    g.add_argument("--log-prompts", action="store_true", help="include prompt text in request logs")
    add_engine_args(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from titaninfer.server.config import ServerConfig
        from titaninfer.server.runner import run_server
    except ModuleNotFoundError as e:  # fastapi / uvicorn / prometheus-client missing
        raise UserError(f"the server needs its extra dependencies ({e.name} is missing): "
                        "pip install 'titaninfer[server]'") from None
    from titaninfer.engine import LLMEngine
    from titaninfer.engine.async_engine import AsyncLLMEngine

    config = ServerConfig(host=args.host, port=args.port, api_key=args.api_key or env.api_key(),
                          served_model_name=args.served_model_name,
                          max_waiting_requests=args.max_waiting_requests,
                          max_tokens_limit=args.max_tokens_limit, max_n=args.max_n,
                          max_body_bytes=args.max_body_bytes, drain_timeout_s=args.drain_timeout,
                          log_prompts=args.log_prompts)
    level = env.log_level()
    logging.getLogger("titaninfer.server").setLevel(level)
    engine = LLMEngine.from_args(args.model, **engine_kwargs(args))
    return run_server(AsyncLLMEngine(engine), config, log_level=level)
