"""Plain data passed between TitanInfer's parts.

The scheduler and the runner talk only through `SchedulerOutput` (scheduler -> runner) and
`RunnerOutput` (runner -> scheduler). A request's static data (prompt, sampling parameters)
crosses once in `NewRequestData`; later steps send only what changed (`ScheduledChunk`).
No tensors appear here.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class Phase(enum.Enum):
    PREFILL = "prefill"
    DECODE = "decode"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the model's context reached
    ABORT = "abort"  # cancelled by the caller (or a client that went away)


_MAX_STOP_STRINGS = 64


@dataclass
class SamplingParams:
    """How to sample one request's completion. Validated on construction (ValueError)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16  # None: up to the model's context
    min_tokens: int = 0
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # number of top logprobs returned per token (0: only the sampled)
    prompt_logprobs: None = None  # not supported; present so vLLM-shaped calls read naturally
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        self._validate()

    def _validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if not isinstance(self.n, int) or self.n < 1:
            bad(f"n must be an integer >= 1, got {self.n!r}")
        for name in ("temperature", "top_p", "min_p", "repetition_penalty",
                     "presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(f"{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            bad(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            bad(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            bad(f"top_k must be -1, 0 (disabled) or a positive integer, got {self.top_k!r}")
        if not 0.0 <= self.min_p <= 1.0:
            bad(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repetition_penalty <= 0:
            bad(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            bad(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            bad(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            bad(f"seed must be an integer, got {self.seed!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            bad(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            bad(f"min_tokens must be an integer >= 0, got {self.min_tokens!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            bad(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        assert isinstance(self.stop, list) and isinstance(self.stop_token_ids, list)
        if len(self.stop) > _MAX_STOP_STRINGS:
            bad(f"at most {_MAX_STOP_STRINGS} stop strings are allowed, got {len(self.stop)}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                bad(f"stop strings must be non-empty strings, got {s!r}")
        for t in self.stop_token_ids:
            if not isinstance(t, int) or t < 0:
                bad(f"stop_token_ids must be non-negative integers, got {t!r}")
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or not 0 <= self.logprobs <= 20):
            bad(f"logprobs must be an integer in [0, 20], got {self.logprobs!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def stop_strings(self) -> list[str]:
        assert isinstance(self.stop, list)
        return self.stop

    def clone(self, **changes: object) -> SamplingParams:
        import dataclasses

        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# Scheduler -> runner


@dataclass(frozen=True)
class NewRequestData:
    """A request the runner has not seen (or must rebuild after a preemption).

    `prompt_token_ids` + `output_token_ids` are every token known so far; the runner keeps
    them for penalties and keeps appending what it samples.
    """

    request_id: str
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    sampling_params: SamplingParams
    block_ids: list[int]


@dataclass(frozen=True)
class ScheduledChunk:
    """One request's work in one step: `len(token_ids)` tokens at positions
    `start_pos ..`, whose KV goes into the request's blocks (`new_block_ids` are appended to
    the block table the runner already holds). `sample` is true when this chunk ends at the
    request's last known token, so a new token is sampled after it."""

    request_id: str
    token_ids: list[int]
    start_pos: int
    new_block_ids: list[int]
    sample: bool

    @property
    def phase(self) -> Phase:
        return Phase.DECODE if self.start_pos > 0 and len(self.token_ids) == 1 else Phase.PREFILL


@dataclass
class SchedulerOutput:
    new_requests: list[NewRequestData] = field(default_factory=list)
    chunks: list[ScheduledChunk] = field(default_factory=list)
    # Requests the runner must forget (finished, aborted or preempted) before this step.
    dropped_request_ids: list[str] = field(default_factory=list)
    # Blocks whose contents must be copied before the step (copy-on-write), src -> dst.
    block_copies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


# ----------------------------------------------------------------------------------------
# Runner -> scheduler


@dataclass(frozen=True)
class TokenLogprobs:
    """The sampled token's logprob and the `n` most likely alternatives (id, logprob)."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]


@dataclass
class RunnerOutput:
    """Per sampled chunk: the new token id (and logprobs when asked for)."""

    sampled_token_ids: dict[str, int] = field(default_factory=dict)
    logprobs: dict[str, TokenLogprobs] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# Engine -> caller


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort" | None while running
    stop_reason: int | str | None = None  # the stop string or token id that ended it
    logprobs: list[TokenLogprobs] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    metrics: RequestMetrics | None = None


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_cached_tokens: int = 0
    token_times: list[float] = field(default_factory=list)
