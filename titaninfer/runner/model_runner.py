"""Runs one scheduled step on the model: inputs -> forward -> logits -> sampled tokens.

The runner keeps, per request it has seen, the block table and the token history (for
penalties). It learns about a request once (`NewRequestData`), then only from the
step's chunks, and forgets it when the scheduler lists it as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from titaninfer.config import ModelConfig
from titaninfer.runner.batch import build_inputs
from titaninfer.runner.kv_cache import allocate_kv_cache
from titaninfer.runner.sampler import Sampler, SamplingRow
from titaninfer.types import RunnerOutput, SamplingParams, SchedulerOutput


@dataclass
class _RequestState:
    block_ids: list[int]
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    params: SamplingParams


class ModelRunner:
    def __init__(self, model: nn.Module, model_config: ModelConfig, num_blocks: int, block_size: int,
                 device: str | torch.device, kv_dtype: torch.dtype, seed: int = 0) -> None:
        self.model = model
        self.model_config = model_config
        self.device = torch.device(device)
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.kv_caches = allocate_kv_cache(model_config, num_blocks, block_size, kv_dtype, self.device)
        self.sampler = Sampler(self.device, seed)
        self._requests: dict[str, _RequestState] = {}

    @property
    def num_tracked_requests(self) -> int:
        return len(self._requests)

    def drop(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self._requests.pop(rid, None)

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> RunnerOutput:
        self.drop(sched.dropped_request_ids)
        for new in sched.new_requests:
            self._requests[new.request_id] = _RequestState(
                block_ids=list(new.block_ids), prompt_token_ids=list(new.prompt_token_ids),
                output_token_ids=list(new.output_token_ids), params=new.sampling_params)
        for chunk in sched.chunks:
            if chunk.new_block_ids:
                self._requests[chunk.request_id].block_ids.extend(chunk.new_block_ids)
        if sched.is_empty:
            return RunnerOutput()

        tables = {rid: st.block_ids for rid, st in self._requests.items()}
        inputs = build_inputs(sched.chunks, tables, self.block_size, self.device)
        hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        out = RunnerOutput()
        if not inputs.sample_rows:
            return out
        rows_idx = torch.tensor(inputs.sample_rows, device=self.device)
        logits = self.model.compute_logits(hidden[rows_idx])
        chunks = [inputs.chunks[i] for i in inputs.sample_chunk_index]
        states = [self._requests[c.request_id] for c in chunks]
        rows = [SamplingRow(st.params, st.prompt_token_ids, st.output_token_ids) for st in states]
        tokens, logprobs = self.sampler(logits, rows)
        for chunk, st, tok, lp in zip(chunks, states, tokens, logprobs):
            st.output_token_ids.append(tok)
            out.sampled_token_ids[chunk.request_id] = tok
            if lp is not None:
                out.logprobs[chunk.request_id] = lp
        return out
