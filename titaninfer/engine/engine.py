"""LLMEngine: the synchronous step loop behind `LLM` and the server.

    add_request(...)  validate, tokenize, queue (n > 1 fans out into n sequences)
    step()            schedule -> runner.execute -> scheduler.update -> detokenize
                      -> RequestOutputs for requests that changed
    abort(id)         cancel, free blocks

Not thread-safe: one thread drives it (the async front in server/ owns that thread).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch

from titaninfer.config import CacheConfig, EngineConfig, SchedulerConfig, parse_dtype
from titaninfer.engine.output_processor import SequenceState
from titaninfer.kernels.compile_watch import starting_up
from titaninfer.kv.manager import KVCacheManager
from titaninfer.loader import LoadedModel, load_model
from titaninfer.runner.kv_cache import CPU_DEFAULT_KV_BYTES, num_blocks_for_bytes
from titaninfer.runner.memory import gpu_kv_cache_bytes, profile_activation_peak
from titaninfer.runner.model_runner import ModelRunner, StepHandle
from titaninfer.scheduler import Request, Scheduler
from titaninfer.types import (
    FinishReason,
    RequestMetrics,
    RequestOutput,
    RunnerOutput,
    SamplingParams,
    SchedulerOutput,
)


@dataclass
class _Tracked:
    """One caller request and its n sequences."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    seq_ids: list[str]
    seqs: list[SequenceState]
    metrics: RequestMetrics
    finished_seqs: set[int] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return len(self.finished_seqs) == len(self.seqs)


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    num_preemptions: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_usage: float
    num_steps: int
    prompt_tokens: int
    generation_tokens: int
    prefix_hit_tokens: int
    prefix_query_tokens: int
    cached_blocks: int = 0
    evictions: int = 0

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hit_tokens / self.prefix_query_tokens if self.prefix_query_tokens else 0.0


def _pick_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or auto")
    return device


class LLMEngine:
    def __init__(self, config: EngineConfig, loaded: LoadedModel) -> None:
        self.config = config
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.model_config = loaded.config
        cache = config.cache
        self.activation_peak_bytes: int | None = None
        t0 = time.perf_counter()
        with starting_up():  # compiles here are start-up, not mid-run stalls
            if cache.num_blocks is None:
                if config.device == "cpu":
                    kv_bytes = cache.kv_cache_bytes or CPU_DEFAULT_KV_BYTES
                elif cache.kv_cache_bytes:
                    kv_bytes = cache.kv_cache_bytes
                else:
                    sched = config.scheduler
                    self.activation_peak_bytes = profile_activation_peak(
                        loaded.model, loaded.config, sched.max_num_batched_tokens, sched.max_num_seqs,
                        cache.block_size, config.dtype, torch.device(config.device))
                    graph_logits = 4 * loaded.config.vocab_size * sched.max_num_seqs
                    kv_bytes = gpu_kv_cache_bytes(cache.gpu_memory_utilization, config.device,
                                                  self.activation_peak_bytes, graph_logits)
                num_blocks = num_blocks_for_bytes(loaded.config, cache.block_size, config.dtype, kv_bytes)
                cache = CacheConfig(**{**cache.__dict__, "num_blocks": num_blocks})
                self.config = config = config.replace(cache=cache)
            assert cache.num_blocks is not None
            self.kv = self._make_kv_manager(cache)
            self.async_scheduling = (config.async_scheduling if config.async_scheduling is not None
                                     else config.device.startswith("cuda"))
            self.scheduler = Scheduler(config.scheduler, self.kv, config.max_model_len,
                                       async_scheduling=self.async_scheduling)
            self.runner = ModelRunner(loaded.model, loaded.config, cache.num_blocks, cache.block_size,
                                      config.device, config.dtype, seed=config.seed,
                                      max_model_len=config.max_model_len,
                                      max_num_seqs=config.scheduler.max_num_seqs,
                                      enforce_eager=config.enforce_eager)
        self._inflight: tuple[SchedulerOutput, StepHandle] | None = None
        # Engine start-up beyond loading weights: memory profiling, KV allocation, graphs.
        self.startup_s = time.perf_counter() - t0
        self._prefix_counted: set[str] = set()
        self._tracked: dict[str, _Tracked] = {}
        self._seq_owner: dict[str, tuple[_Tracked, int]] = {}
        self._ids = itertools.count()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        eos = set(loaded.config.eos_token_ids)
        if self.tokenizer is not None:
            eos |= set(self.tokenizer.eos_token_ids)
        self.eos_token_ids = frozenset(eos)

    def _make_kv_manager(self, cache: CacheConfig) -> KVCacheManager:
        assert cache.num_blocks is not None
        if cache.enable_prefix_caching:
            try:
                from titaninfer.prefix import PrefixCachingKVManager
            except ImportError:
                return KVCacheManager(cache.num_blocks, cache.block_size)
            return PrefixCachingKVManager(cache.num_blocks, cache.block_size, cache.eviction_policy)
        return KVCacheManager(cache.num_blocks, cache.block_size)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_args(cls, model: str | None = None, *, device: str | None = "auto", dtype: str = "auto",
                  block_size: int = 16, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
                  kv_cache_bytes: int | None = None, gpu_memory_utilization: float = 0.9,
                  num_blocks: int | None = None, max_model_len: int = 0, seed: int = 0,
                  scheduling_policy: str = "fcfs", aging_per_s: float = 1.0,
                  enable_prefix_caching: bool = True, eviction_policy: str = "lru",
                  enable_chunked_prefill: bool = True, enforce_eager: bool = False,
                  async_scheduling: bool | None = None) -> LLMEngine:
        dev = _pick_device(device)
        torch_dtype = parse_dtype(dtype, dev)
        loaded = load_model(model, device=dev, dtype=torch_dtype, seed=seed)
        mcfg = loaded.config
        if max_model_len and max_model_len > mcfg.max_position_embeddings:
            raise ValueError(f"max_model_len {max_model_len} exceeds the model's context "
                             f"({mcfg.max_position_embeddings})")
        cfg = EngineConfig(
            model=model or "default:SmolLM2-135M-Instruct",
            model_config=mcfg,
            cache=CacheConfig(block_size=block_size, kv_cache_bytes=kv_cache_bytes,
                              gpu_memory_utilization=gpu_memory_utilization, num_blocks=num_blocks,
                              enable_prefix_caching=enable_prefix_caching, eviction_policy=eviction_policy),
            scheduler=SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                      max_model_len=max_model_len, policy=scheduling_policy,
                                      aging_per_s=aging_per_s, enable_chunked_prefill=enable_chunked_prefill),
            device=dev, dtype=torch_dtype, seed=seed, enforce_eager=enforce_eager,
            async_scheduling=async_scheduling,
        )
        return cls(cfg, loaded)

    # ------------------------------------------------------------------ requests
    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len

    def tokenize_prompt(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer (dummy weights?): pass token ids")
            return prompt, self.tokenizer.encode(prompt)  # type: ignore[attr-defined]
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, int) for t in prompt):
            raise ValueError("a prompt must be a string or a list of token ids")
        return None, list(prompt)

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, priority: int = 0,
                    arrival_time: float | None = None, cache_salt: str | None = None) -> str:
        """Queue a request; returns its id. Raises ValueError for invalid input."""
        params = params or SamplingParams()
        text, ids = self.tokenize_prompt(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        vocab = self.model_config.vocab_size
        if any(t < 0 or t >= vocab for t in ids):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens but the model's context is "
                             f"{self.max_model_len} tokens (at least one must be left to generate)")
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self._tracked:
            raise ValueError(f"duplicate request id {rid!r}")
        room = self.max_model_len - len(ids)
        capacity = self.kv.num_blocks * self.kv.block_size - len(ids)
        max_tokens = min(params.max_tokens, room) if params.max_tokens is not None else min(room, capacity)
        arrival = arrival_time if arrival_time is not None else time.monotonic()
        seq_ids = [rid] if params.n == 1 else [f"{rid}#{i}" for i in range(params.n)]
        seq_params = [params if params.n == 1 else
                      params.clone(n=1, seed=None if params.seed is None else params.seed + i)
                      for i in range(params.n)]
        tracked = _Tracked(rid, text, ids, seq_ids,
                           [SequenceState(i, self.tokenizer, ids, sp) for i, sp in enumerate(seq_params)],
                           RequestMetrics(arrival_time=arrival))
        reqs = [Request(request_id=sid, prompt_token_ids=ids, sampling_params=sp, max_tokens=max_tokens,
                        eos_token_ids=self.eos_token_ids, priority=priority, arrival_time=arrival,
                        cache_salt=cache_salt) for sid, sp in zip(seq_ids, seq_params, strict=True)]
        added: list[str] = []
        try:
            for r in reqs:
                self.scheduler.add_request(r)
                added.append(r.request_id)
        except ValueError:
            for sid in added:
                self.scheduler.abort(sid)
            raise
        self._tracked[rid] = tracked
        for i, sid in enumerate(seq_ids):
            self._seq_owner[sid] = (tracked, i)
        self.prompt_tokens += len(ids) * params.n
        return rid

    def abort(self, request_id: str) -> RequestOutput | None:
        """Cancel a request (all its sequences); returns its final output, or None if unknown
        or already finished."""
        tracked = self._tracked.get(request_id)
        if tracked is None:
            return None
        for i, sid in enumerate(tracked.seq_ids):
            req = self.scheduler.abort(sid)
            if req is not None and i not in tracked.finished_seqs:
                self._finish_seq(tracked, i, FinishReason.ABORT, None)
        return self._emit(tracked)

    def has_unfinished_requests(self) -> bool:
        return bool(self._tracked)

    @property
    def num_unfinished_requests(self) -> int:
        return len(self._tracked)

    # ------------------------------------------------------------------ step
    def step(self, final_only: bool = False) -> list[RequestOutput]:
        """One engine step; returns the outputs of requests that changed (with final_only,
        of requests that finished: an offline caller skips building a growing snapshot of
        every running request at every step).

        Synchronous mode: schedule -> run -> update. Asynchronous mode (GPU): schedule and
        launch step N+1, then process step N's tokens while the GPU runs N+1, so the host
        work of a step hides behind the device work of the next."""
        sched = self.scheduler.schedule()
        handle = None
        if sched.is_empty:
            self.runner.drop(sched.dropped_request_ids)
        else:
            self._note_scheduled(sched)
            handle = self.runner.execute_async(sched)
        if not self.async_scheduling:
            return self._process(sched, handle.result(), final_only) if handle is not None else []
        outputs: list[RequestOutput] = []
        if self._inflight is not None:
            prev_sched, prev_handle = self._inflight
            outputs = self._process(prev_sched, prev_handle.result(), final_only)
        self._inflight = (sched, handle) if handle is not None else None
        return outputs

    def _note_scheduled(self, sched: SchedulerOutput) -> None:
        now = time.monotonic()
        for new in sched.new_requests:
            owner = self._seq_owner.get(new.request_id)
            req = self.scheduler.requests.get(new.request_id)
            if owner is None or req is None or new.request_id in self._prefix_counted:
                continue
            self._prefix_counted.add(new.request_id)
            if owner[0].metrics.first_scheduled_time is None:
                owner[0].metrics.first_scheduled_time = now
                owner[0].metrics.num_cached_tokens = req.num_cached_tokens
            self.prefix_query_tokens += len(req.prompt_token_ids)
            self.prefix_hit_tokens += req.num_cached_tokens

    def _process(self, sched: SchedulerOutput, result: RunnerOutput,
                 final_only: bool = False) -> list[RequestOutput]:
        updated = self.scheduler.update(sched, result)
        now = time.monotonic()
        changed: dict[str, _Tracked] = {}
        for req in updated:
            owner = self._seq_owner.get(req.request_id)
            if owner is None:
                continue
            tracked, idx = owner
            seq = tracked.seqs[idx]
            token = req.output_token_ids[-1]
            self.generation_tokens += 1
            stopped_by_token = req.is_finished and req.finish_reason is FinishReason.STOP
            # A stop token (EOS or stop_token_ids) ends the text without being shown in it.
            show = not stopped_by_token or seq.params.include_stop_str_in_output
            stop_str = seq.append(token, result.logprobs.get(req.request_id), detokenize=show)
            if idx == 0:
                if tracked.metrics.first_token_time is None:
                    tracked.metrics.first_token_time = now
                tracked.metrics.token_times.append(now)
            if stop_str is not None and not req.is_finished:
                self.scheduler.finish(req, FinishReason.STOP, stop_str)
            if req.is_finished and idx not in tracked.finished_seqs:
                reason = req.finish_reason or FinishReason.STOP
                self._finish_seq(tracked, idx, reason, stop_str if stop_str is not None else req.stop_reason)
            changed[tracked.request_id] = tracked
        return [self._emit(t) for t in changed.values() if t.finished or not final_only]

    def _finish_seq(self, tracked: _Tracked, idx: int, reason: FinishReason, stop_reason: int | str | None) -> None:
        tracked.seqs[idx].finish(reason, stop_reason)
        tracked.finished_seqs.add(idx)
        self._seq_owner.pop(tracked.seq_ids[idx], None)
        self._prefix_counted.discard(tracked.seq_ids[idx])

    def _emit(self, tracked: _Tracked) -> RequestOutput:
        finished = tracked.finished
        if finished:
            tracked.metrics.finished_time = time.monotonic()
            self._tracked.pop(tracked.request_id, None)
        return RequestOutput(
            request_id=tracked.request_id,
            prompt=tracked.prompt,
            prompt_token_ids=tracked.prompt_token_ids,
            outputs=[s.to_output() for s in tracked.seqs],
            finished=finished,
            metrics=tracked.metrics,
        )

    # ------------------------------------------------------------------ introspection
    def stats(self) -> EngineStats:
        kv = self.kv
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_preemptions=self.scheduler.num_preemptions,
            kv_blocks_total=kv.num_blocks,
            kv_blocks_used=kv.num_used_blocks,
            kv_usage=kv.usage,
            num_steps=self.scheduler.num_steps,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
            prefix_hit_tokens=self.prefix_hit_tokens,
            prefix_query_tokens=self.prefix_query_tokens,
            cached_blocks=getattr(kv, "num_cached_blocks", 0),
            evictions=getattr(kv, "num_evictions", 0),
        )

    def check_block_accounting(self) -> None:
        """Raise AssertionError if a block leaked, was double-freed or is held by a
        request the scheduler no longer knows."""
        self.kv.check_invariants()
        if not self.scheduler.has_unfinished() and self.kv.num_used_blocks != 0:
            raise AssertionError(f"{self.kv.num_used_blocks} blocks in use with no request running")
