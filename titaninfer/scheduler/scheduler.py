"""The step scheduler: continuous batching with chunked prefill and preemption by recompute.

Each step, under a token budget (`max_num_batched_tokens`) and a sequence cap
(`max_num_seqs`):
1. running requests in policy order, decodes before prefill chunks, each gets the tokens it
   still needs (a prefill may get only a chunk); when the KV pool runs dry the least
   deserving running request (lowest priority, newest) is preempted: its blocks are freed
   and it goes back to waiting, to be recomputed from scratch later;
2. if nothing was preempted, waiting requests are admitted in policy order while budget,
   sequence slots and blocks last.
`update` then appends sampled tokens and applies the token-level stop rules.

The scheduler never sees tensors: it emits a `SchedulerOutput` and reads a `RunnerOutput`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from titaninfer.config import SchedulerConfig
from titaninfer.kv.manager import KVCacheManager
from titaninfer.scheduler.policy import make_policy
from titaninfer.scheduler.request import Request, RequestStatus
from titaninfer.types import (
    FinishReason,
    NewRequestData,
    RunnerOutput,
    ScheduledChunk,
    SchedulerOutput,
)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, max_model_len: int,
                 clock: Callable[[], float] = time.monotonic, async_scheduling: bool = False) -> None:
        self.config = config
        # With async scheduling, step N+1 is scheduled before step N's tokens are known:
        # a request that sampled in step N decodes its (pending) token in step N+1.
        self.async_scheduling = async_scheduling
        self.kv = kv
        self.max_model_len = max_model_len
        self.clock = clock
        self.policy = make_policy(config.policy, config.aging_per_s)
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self._dropped: list[str] = []  # request ids the runner must forget next step
        self.num_preemptions = 0
        self.num_steps = 0

    # ------------------------------------------------------------------ requests
    def add_request(self, req: Request) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"duplicate request id {req.request_id!r}")
        if not self.kv.can_fit(len(req.prompt_token_ids) + req.max_tokens):
            raise ValueError(
                f"request needs {len(req.prompt_token_ids) + req.max_tokens} tokens of KV cache, "
                f"more than the whole cache holds ({self.kv.num_blocks * self.kv.block_size})")
        req.status = RequestStatus.WAITING
        self.requests[req.request_id] = req
        self.waiting.append(req)

    def abort(self, request_id: str) -> Request | None:
        req = self.requests.get(request_id)
        if req is None:
            return None
        self.finish(req, FinishReason.ABORT)
        return req

    def finish(self, req: Request, reason: FinishReason, stop_reason: int | str | None = None) -> None:
        """End a request: free its blocks, forget it, tell the runner. Idempotent."""
        if req.is_finished:
            return
        if req.status is RequestStatus.RUNNING:
            self.running.remove(req)
            self._dropped.append(req.request_id)
        else:
            self.waiting.remove(req)
        self.kv.free(req.request_id)
        req.status = RequestStatus.FINISHED
        req.finish_reason = reason
        if stop_reason is not None:
            req.stop_reason = stop_reason
        self.requests.pop(req.request_id, None)

    @property
    def num_unfinished(self) -> int:
        return len(self.requests)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # ------------------------------------------------------------------ schedule
    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.kv.free(req.request_id)
        req.num_computed_tokens = 0
        req.num_cached_tokens = 0
        req.num_full_known_blocks = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.append(req)
        self._dropped.append(req.request_id)

    def schedule(self) -> SchedulerOutput:
        now = self.clock()
        self.num_steps += 1
        budget = self.config.max_num_batched_tokens
        out = SchedulerOutput(dropped_request_ids=self._dropped)
        self._dropped = []
        key = self.policy.key
        self.running.sort(key=lambda r: key(r, now))
        scheduled: set[str] = set()
        preempted = False

        # Decodes first (one token each, latency-critical), then prefill chunks.
        for decode_pass in (True, False):
            for req in list(self.running):
                if budget == 0:
                    break
                if req.request_id in scheduled or req.status is not RequestStatus.RUNNING:
                    continue
                remaining = req.num_tokens + req.num_pending_tokens - req.num_computed_tokens
                if (remaining == 1) != decode_pass or remaining <= 0:
                    continue
                if req.num_pending_tokens and self._will_finish_on_length(req):
                    continue  # its pending token is its last: computing it would be wasted
                num_new = min(remaining, budget)
                preemptions_before = self.num_preemptions
                new_blocks = self._allocate_or_preempt(req, num_new, scheduled)
                preempted = preempted or self.num_preemptions > preemptions_before
                if new_blocks is None:
                    continue
                out.chunks.append(self._chunk(req, num_new, new_blocks))
                scheduled.add(req.request_id)
                budget -= num_new

        # After a preemption the pool is full: admitting now would only thrash.
        if not preempted:
            self._admit_waiting(out, budget, now)
        return out

    def _will_finish_on_length(self, req: Request) -> bool:
        n = req.num_tokens + req.num_pending_tokens
        return len(req.output_token_ids) + req.num_pending_tokens >= req.max_tokens or n >= self.max_model_len

    def _allocate_or_preempt(self, req: Request, num_new: int, scheduled: set[str]) -> list[int] | None:
        """Blocks for req's next `num_new` tokens, preempting others (or req itself) until
        they fit. Returns None if req itself had to be preempted."""
        while True:
            new_blocks = self.kv.allocate_slots(req.request_id, req.num_computed_tokens + num_new)
            if new_blocks is not None:
                return new_blocks
            victims = [r for r in self.running if r.request_id not in scheduled and r is not req]
            victim = victims[-1] if victims else req
            self._preempt(victim)
            if victim is req:
                return None

    def _admit_waiting(self, out: SchedulerOutput, budget: int, now: float) -> int:
        key = self.policy.key
        self.waiting.sort(key=lambda r: key(r, now))
        for req in list(self.waiting):
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                break
            if req.num_pending_tokens:
                continue  # preempted while its last token was in flight: wait for it
            if req.num_computed_tokens == 0:
                cached = self.kv.match_prefix(req.request_id, req.all_token_ids, req.cache_salt)
                req.num_computed_tokens = cached
                if req.num_preemptions == 0:
                    req.num_cached_tokens = cached
            remaining = req.num_tokens - req.num_computed_tokens
            num_new = min(remaining, budget)
            if num_new < remaining and not self.config.enable_chunked_prefill:
                self._undo_match(req)
                break
            new_blocks = self.kv.allocate_slots(req.request_id, req.num_computed_tokens + num_new)
            if new_blocks is None:
                self._undo_match(req)
                break
            self.waiting.remove(req)
            self.running.append(req)
            req.status = RequestStatus.RUNNING
            out.new_requests.append(NewRequestData(
                request_id=req.request_id,
                prompt_token_ids=req.prompt_token_ids,
                output_token_ids=list(req.output_token_ids),
                sampling_params=req.sampling_params,
                block_ids=list(self.kv.block_ids(req.request_id)),
            ))
            out.chunks.append(self._chunk(req, num_new, []))
            budget -= num_new
        return budget

    def _undo_match(self, req: Request) -> None:
        self.kv.free(req.request_id)
        req.num_computed_tokens = 0
        req.num_full_known_blocks = 0

    def _chunk(self, req: Request, num_new: int, new_blocks: list[int]) -> ScheduledChunk:
        start = req.num_computed_tokens
        req.num_computed_tokens = start + num_new
        sample = req.num_computed_tokens == req.num_tokens + req.num_pending_tokens
        if sample and self.async_scheduling:
            req.num_pending_tokens += 1
        return ScheduledChunk(
            request_id=req.request_id,
            token_ids=req.token_ids_slice(start, start + num_new),
            start_pos=start,
            new_block_ids=new_blocks,
            sample=sample,
        )

    # ------------------------------------------------------------------ update
    def update(self, sched_out: SchedulerOutput, runner_out: RunnerOutput) -> list[Request]:
        """Apply a step's results. Returns the requests that received a token this step
        (finished ones included, with status FINISHED)."""
        updated: list[Request] = []
        for chunk in sched_out.chunks:
            req = self.requests.get(chunk.request_id)
            if req is None:
                continue  # finished or aborted while the step ran
            if req.status is RequestStatus.RUNNING:
                known = min(req.num_computed_tokens, req.num_tokens)
                # Only when a block became full and known: building all_token_ids is O(n),
                # every step, for every running request otherwise.
                if known // self.kv.block_size > req.num_full_known_blocks:
                    req.num_full_known_blocks = known // self.kv.block_size
                    self.kv.commit_full_blocks(req.request_id, req.all_token_ids, known)
            if not chunk.sample:
                continue
            if self.async_scheduling:
                req.num_pending_tokens -= 1
            elif req.status is not RequestStatus.RUNNING:
                continue  # cannot happen synchronously: preemption follows update
            token = runner_out.sampled_token_ids[chunk.request_id]
            req.output_token_ids.append(token)
            reason = req.check_stop_token(token, self.max_model_len)
            if reason is not None:
                self.finish(req, reason)
            updated.append(req)
        return updated
