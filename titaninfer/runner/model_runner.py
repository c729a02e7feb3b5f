"""Runs one scheduled step on the model: inputs -> forward -> logits -> sampled tokens.

The runner keeps, per request it has seen, the block table and the token history (for
penalties). It learns about a request once (`NewRequestData`), then only from the step's
chunks, and forgets it when the scheduler lists it as dropped.

`execute_async` launches a step and returns at once with a `StepHandle`; the sampled
tokens stay on the device (the next step reads placeholder tokens from them) and reach
the host through one pinned copy that `StepHandle.result()` waits for: the step's only
host-device synchronisation. `execute` is launch + result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from titaninfer import env
from titaninfer.config import ModelConfig
from titaninfer.layers.dispatch import use_triton
from titaninfer.runner.batch import HostBatch, build_host_batch, host_to_device, to_device
from titaninfer.runner.cuda_graph import (
    DecodeGraphs,
    decode_context_tiers,
    default_capture_sizes,
    tier_for,
)
from titaninfer.runner.kv_cache import allocate_kv_cache
from titaninfer.runner.sampler import Sampler, SamplingRow
from titaninfer.types import (
    RunnerOutput,
    SamplingParams,
    ScheduledChunk,
    SchedulerOutput,
    TokenLogprobs,
)

logger = logging.getLogger(__name__)


@dataclass
class _RequestState:
    block_ids: list[int]
    prompt_token_ids: list[int]
    output_token_ids: list[int]  # known on the host
    params: SamplingParams
    num_sampled: int  # tokens sampled so far, including ones not yet on the host


@dataclass
class StepHandle:
    """A launched step. `result()` waits for its tokens (once) and returns them."""

    runner: ModelRunner
    request_ids: list[str]
    tokens_host: torch.Tensor | None  # pinned [n] int64, filled by an async copy
    done: torch.cuda.Event | None
    tokens_list: list[int] | None = None  # when the sampler already returned host values
    logprobs: dict = field(default_factory=dict)
    _result: RunnerOutput | None = None

    def result(self) -> RunnerOutput:
        if self._result is None:
            if self.tokens_list is None:
                assert self.tokens_host is not None
                if self.done is not None:
                    self.done.synchronize()
                self.tokens_list = self.tokens_host.tolist()
            out = RunnerOutput()
            for rid, tok in zip(self.request_ids, self.tokens_list, strict=True):
                out.sampled_token_ids[rid] = tok
                st = self.runner._requests.get(rid)
                if st is not None:
                    st.output_token_ids.append(tok)
            out.logprobs = self.logprobs
            self._result = out
            if self.runner._pending is self:
                self.runner._pending = None
        return self._result


class ModelRunner:
    def __init__(self, model: nn.Module, model_config: ModelConfig, num_blocks: int, block_size: int,
                 device: str | torch.device, kv_dtype: torch.dtype, seed: int = 0,
                 max_model_len: int = 0, max_num_seqs: int = 256, enforce_eager: bool = False) -> None:
        self.model = model
        self.model_config = model_config
        self.device = torch.device(device)
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.kv_caches = allocate_kv_cache(model_config, num_blocks, block_size, kv_dtype, self.device)
        self.sampler = Sampler(self.device, seed)
        self._requests: dict[str, _RequestState] = {}
        self._pending: StepHandle | None = None  # the last launched step, until its result is read
        self._last_tokens: torch.Tensor | None = None  # device tokens of the last launched step
        self._last_rows: dict[str, int] = {}
        self.graphs = None
        self.prefill_graphs = None  # a lone prefill chunk replays one of these (prefill_graphs.py)
        self.max_model_len = max_model_len or model_config.max_position_embeddings
        if self.device.type == "cuda" and not enforce_eager and not env.disable_cuda_graphs():
            max_blocks = -(-self.max_model_len // block_size)
            self.graphs = DecodeGraphs(model, self.kv_caches, default_capture_sizes(max_num_seqs),
                                       max_blocks, block_size, self.device)
            self.graphs.capture()
            from titaninfer.runner import prefill_graphs

            buckets = tuple(b for b in prefill_graphs.BUCKETS if b // 2 < self.max_model_len)
            if prefill_graphs.ENABLED and buckets:
                self.prefill_graphs = prefill_graphs.PrefillGraphs(
                    model, self.kv_caches, max_blocks, block_size, self.device, pool=self.graphs.pool, buckets=buckets)
                self.prefill_graphs.capture()
        if self.device.type == "cuda" and use_triton(self.kv_caches[0][0]):
            self._warm_up_kernels(max_num_seqs)
            from titaninfer.kernels.compile_watch import watch_late_compiles

            watch_late_compiles()

    def _warm_up_kernels(self, max_num_seqs: int) -> None:
        """Compile, before the first request, every variant of the kernels whose constexprs
        depend on the batch: the sampler (one per power-of-two batch) and the decode
        attention (split counts, preloading or not). Otherwise each compiles mid-run,
        stalling a step ~1 s."""
        from titaninfer.kernels.argmax import greedy_argmax
        from titaninfer.kernels.decode_attention import paged_decode_attention, warm_up_calls
        from titaninfer.kernels.sampling import sample_tokens
        from titaninfer.kernels.triton_common import device_sms

        t0 = time.perf_counter()
        vocab = self.model_config.vocab_size
        b = 1
        while True:
            logits = torch.zeros((b, vocab), dtype=torch.float32, device=self.device)
            f = torch.zeros(b, dtype=torch.float32, device=self.device)
            i = torch.zeros(b, dtype=torch.int64, device=self.device)
            sample_tokens(logits, f, f, i, i)
            if b >= max_num_seqs:
                break
            b *= 2
        greedy_argmax(logits[:1])  # one variant whatever the rows (n_rows is not specialised)
        k_cache, v_cache = self.kv_caches[0]
        hq, hk, d = self.model_config.num_heads, k_cache.shape[2], k_cache.shape[-1]
        for rows, splits in warm_up_calls(hk, device_sms(self.device)):
            q = torch.zeros((rows, hq, d), dtype=k_cache.dtype, device=self.device)
            seq_lens = torch.zeros(rows, dtype=torch.int32, device=self.device)
            tables = torch.zeros((rows, 16), dtype=torch.int32, device=self.device)
            paged_decode_attention(q, k_cache, v_cache, seq_lens, tables, 1.0, num_splits=splits)
        self._warm_up_mixed_step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        logger.info("kernel warm-up in %.1f s", time.perf_counter() - t0)

    @torch.inference_mode()
    def _warm_up_mixed_step(self) -> None:
        """One eager step holding a decode and a prefill chunk over a cached prefix, the
        shape of most steps under load, which the start-up memory profile (a lone prefill)
        and the decode graphs do not cover. Writes KV into blocks no request owns yet."""
        bs = self.block_size
        n_dec = -(-17 // bs)  # the decode's context: 16 cached tokens + its new one
        need = n_dec + -(-(16 + 20) // bs)  # the prefill: 16 cached + a 20-token chunk
        if self.num_blocks < need:
            return
        decode = ScheduledChunk("warm-decode", [1], 16, [], True)
        prefill = ScheduledChunk("warm-prefill", list(range(2, 22)), 16, [], True)
        tables = {"warm-decode": list(range(n_dec)), "warm-prefill": list(range(n_dec, need))}
        hb = build_host_batch([decode, prefill], tables, bs)
        self._forward(hb)

    @property
    def num_tracked_requests(self) -> int:
        return len(self._requests)

    def drop(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self._requests.pop(rid, None)

    def execute(self, sched: SchedulerOutput) -> RunnerOutput:
        handle = self.execute_async(sched)
        return handle.result() if handle is not None else RunnerOutput()

    @torch.inference_mode()
    def execute_async(self, sched: SchedulerOutput) -> StepHandle | None:
        self.drop(sched.dropped_request_ids)
        for new in sched.new_requests:
            self._requests[new.request_id] = _RequestState(
                block_ids=list(new.block_ids), prompt_token_ids=list(new.prompt_token_ids),
                output_token_ids=list(new.output_token_ids), params=new.sampling_params,
                num_sampled=len(new.output_token_ids))
        for chunk in sched.chunks:
            if chunk.new_block_ids:
                self._requests[chunk.request_id].block_ids.extend(chunk.new_block_ids)
        if sched.is_empty:
            return None

        tables = {c.request_id: self._requests[c.request_id].block_ids for c in sched.chunks}
        hb = build_host_batch(sched.chunks, tables, self.block_size)
        logits, graph_greedy = self._forward(hb)
        if logits is None:
            return StepHandle(self, [], None, None, tokens_list=[])

        chunks = [hb.chunks[i] for i in hb.sample_chunk_index]
        states = [self._requests[c.request_id] for c in chunks]
        if any(_needs_history(st.params) for st in states) and self._pending is not None:
            self._pending.result()  # penalties need every earlier token on the host
        logprobs: list[TokenLogprobs | None]
        if graph_greedy is not None and all(_greedy_as_is(st.params) for st in states):
            tokens_dev, logprobs = graph_greedy, [None] * len(states)  # the graph's own argmax
        else:
            rows = [SamplingRow(st.params, st.prompt_token_ids, st.output_token_ids, st.num_sampled)
                    for st in states]
            tokens_dev, logprobs = self.sampler.sample(logits, rows)
        for st in states:
            st.num_sampled += 1
        request_ids = [c.request_id for c in chunks]
        self._last_tokens = tokens_dev
        self._last_rows = {rid: i for i, rid in enumerate(request_ids)}
        if self.device.type == "cuda":
            host = torch.empty(len(request_ids), dtype=torch.int64, pin_memory=True)
            host.copy_(tokens_dev, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            handle = StepHandle(self, request_ids, host, done)
        else:
            handle = StepHandle(self, request_ids, None, None, tokens_list=tokens_dev.tolist())
        handle.logprobs = {rid: lp for rid, lp in zip(request_ids, logprobs, strict=True) if lp is not None}
        self._pending = handle
        return handle

    def _fill_placeholders(self, hb: HostBatch, input_ids: torch.Tensor) -> None:
        """Write tokens the previous step sampled (still on the device) into input_ids."""
        if not hb.placeholder_rows:
            return
        assert self._last_tokens is not None, "placeholder token without a previous step"
        src = [self._last_rows[rid] for rid in hb.placeholder_request_ids]
        n = len(src)
        if src == list(range(n)) and hb.placeholder_rows == src:
            input_ids[:n].copy_(self._last_tokens[:n])  # same batch order as last step
            return
        dst_t = host_to_device(np.asarray(hb.placeholder_rows, dtype=np.int64), self.device)
        src_t = host_to_device(np.asarray(src, dtype=np.int64), self.device)
        input_ids[dst_t] = self._last_tokens[src_t]

    def _forward(self, hb: HostBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Run the model; returns (float32 logits of the sampled rows or None if none, their
        greedy tokens where a decode graph computed them, else None)."""
        if self.graphs is not None and self.graphs.can_run(hb):
            # Every decode samples, so the graph's logits rows are the sampled rows in order.
            logits = self.graphs.run(hb, lambda ids: self._fill_placeholders(hb, ids))
            return logits, self.graphs.greedy_tokens_for(len(hb.chunks))
        if self.prefill_graphs is not None and self.prefill_graphs.can_run(hb):
            return self.prefill_graphs.run(hb, lambda ids: self._fill_placeholders(hb, ids)), None
        inputs = to_device(hb, self.device)
        # Decode kernels pick their split count from this bound: the context tier of the
        # step's longest sequence, as the CUDA graphs take it, so that eager and replayed
        # steps compute identically.
        tiers = decode_context_tiers(self.kv_caches, len(hb.chunks), self.max_model_len)
        inputs.meta.max_seq_len = max(inputs.meta.max_seq_len, tier_for(tiers, inputs.meta.max_seq_len))
        self._fill_placeholders(hb, inputs.input_ids)
        hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        if not hb.sample_rows:
            return None, None
        rows = host_to_device(np.asarray(hb.sample_rows, dtype=np.int64), self.device)
        return self.model.compute_logits(hidden[rows]), None


def _greedy_as_is(p: SamplingParams) -> bool:
    """A row whose token is the plain argmax of its logits (no penalty changes them, no
    logprobs to report): what a decode graph's own argmax gives."""
    return p.greedy and p.logprobs is None and not _needs_history(p)


def _needs_history(p: SamplingParams) -> bool:
    return p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
