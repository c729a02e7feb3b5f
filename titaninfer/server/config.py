"""`ServerConfig`: everything the HTTP front decides on its own (the engine has its own
`EngineConfig`). Frozen and validated on construction, like the engine's configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: exposing a model is a decision
    port: int = 8000
    api_key: str | None = None  # None: no authentication
    served_model_name: str | None = None  # None: derived from the model spec
    # Admission: up to `max_num_seqs` sequences run in the engine; beyond them at most
    # this many sequences may wait. A request with n=3 counts as 3. More -> 429.
    max_waiting_requests: int = 1024
    max_tokens_limit: int = 4096  # largest max_tokens a client may ask for (and the chat default)
    max_n: int = 16
    max_body_bytes: int = 4 * 1024 * 1024
    max_stop_strings: int = 16
    max_stop_len: int = 256
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight requests may finish
    log_prompts: bool = False  # request log lines carry prompt text only when asked
    disconnect_poll_s: float = 0.2  # how often a non-streaming request checks its client

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key must not be empty")
        for name in ("max_tokens_limit", "max_n", "max_body_bytes", "max_stop_strings", "max_stop_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_waiting_requests < 0:
            raise ValueError(f"max_waiting_requests must be >= 0, got {self.max_waiting_requests}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.disconnect_poll_s <= 0:
            raise ValueError(f"disconnect_poll_s must be > 0, got {self.disconnect_poll_s}")

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)
