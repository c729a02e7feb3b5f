"""The scheduler's view of one sequence: its tokens, progress and status (mutable)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from titaninfer.types import FinishReason, SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    """`num_computed_tokens` counts tokens whose KV is in the cache (or scheduled into it).
    Invariant: 0 <= num_computed_tokens <= num_tokens + num_pending_tokens."""

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    max_tokens: int  # resolved: never None, already capped by the model's context
    eos_token_ids: frozenset[int] = frozenset()
    priority: int = 0  # lower runs first (as in vLLM)
    arrival_time: float = field(default_factory=time.monotonic)
    cache_salt: str | None = None
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    # Tokens sampled by a step still in flight (asynchronous scheduling): their ids are not
    # known yet, but the next step may already compute them (as placeholders).
    num_pending_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at admission
    # Blocks already full of computed, known tokens when update() last looked (it offers
    # blocks to the prefix cache only when this grows).
    num_full_known_blocks: int = 0
    status: RequestStatus = RequestStatus.WAITING
    num_preemptions: int = 0
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        """Token ids at positions [start, end); -1 for pending (not yet known) tokens."""
        known = self.num_tokens
        if end > known:
            return self.token_ids_slice(start, known) + [-1] * (end - max(start, known))
        p = len(self.prompt_token_ids)
        if end <= p:
            return self.prompt_token_ids[start:end]
        if start >= p:
            return self.output_token_ids[start - p:end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[:end - p]

    def check_stop_token(self, token_id: int, max_model_len: int) -> FinishReason | None:
        """Token-level stop rules, applied after `token_id` was appended."""
        n_out = len(self.output_token_ids)
        sp = self.sampling_params
        if n_out >= sp.min_tokens:
            if not sp.ignore_eos and token_id in self.eos_token_ids:
                self.stop_reason = None
                return FinishReason.STOP
            if token_id in sp.stop_token_ids:  # type: ignore[operator]
                self.stop_reason = token_id
                return FinishReason.STOP
        if n_out >= self.max_tokens or self.num_tokens >= max_model_len:
            return FinishReason.LENGTH
        return None
