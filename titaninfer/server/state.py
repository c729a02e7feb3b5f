"""`ServerState`: what one app instance shares between its routes and middleware (kept in
`app.state.titaninfer`). Built once by `build_app`; the engine facts in it (context length,
vocabulary, KV capacity) are read from the engine at that time and do not change.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from titaninfer.engine.async_engine import AsyncLLMEngine
from titaninfer.server.config import ServerConfig
from titaninfer.server.errors import bad_request
from titaninfer.server.limits import Admission, DrainState
from titaninfer.server.logprobs import TokenTexts
from titaninfer.server.metrics import ServerMetrics
from titaninfer.server.sampling import ModelLimits

_DEFAULT_PREFIX = "default:"


def served_model_name(model_spec: str) -> str:
    """A short public name: 'SmolLM2-135M-Instruct' for the default, a file's name without
    .gguf, a folder's last component, or the hub id as given."""
    if model_spec.startswith(_DEFAULT_PREFIX):
        return model_spec.removeprefix(_DEFAULT_PREFIX)
    if model_spec.count("/") == 1 and not os.path.exists(model_spec):
        return model_spec  # a Hugging Face hub id
    base = os.path.basename(os.path.normpath(model_spec))
    return base.removesuffix(".gguf") or model_spec


@dataclass
class ServerState:
    engine: AsyncLLMEngine
    config: ServerConfig
    model_name: str
    model_aliases: frozenset[str]
    limits: ModelLimits
    tokenizer: Any  # titaninfer.tokenizer.Tokenizer, or None (dummy weights)
    admission: Admission
    drain: DrainState
    metrics: ServerMetrics
    token_texts: TokenTexts
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def create(cls, engine: AsyncLLMEngine, config: ServerConfig) -> ServerState:
        e = engine.engine
        spec = e.config.model
        name = config.served_model_name or served_model_name(spec)
        drain = DrainState()
        stats = engine.stats()
        return cls(
            engine=engine, config=config, model_name=name,
            model_aliases=frozenset({name, spec, served_model_name(spec)}),
            limits=ModelLimits(max_model_len=e.max_model_len, vocab_size=e.model_config.vocab_size,
                               kv_capacity_tokens=stats.kv_blocks_total * e.config.cache.block_size),
            tokenizer=e.tokenizer,
            admission=Admission(e.config.scheduler.max_num_seqs, config.max_waiting_requests),
            drain=drain,
            metrics=ServerMetrics(engine.stats, lambda: drain.in_flight),
            token_texts=TokenTexts(e.tokenizer),
        )

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.model_aliases:
            raise bad_request(f"the model '{model}' does not exist; this server serves "
                              f"'{self.model_name}'", "model", code="model_not_found")

    def require_tokenizer(self, param: str) -> Any:
        if self.tokenizer is None:
            raise bad_request("this model has no tokenizer (dummy weights): send token ids", param)
        return self.tokenizer


def get_state(request: Request) -> ServerState:
    state = request.app.state.titaninfer
    assert isinstance(state, ServerState)
    return state
