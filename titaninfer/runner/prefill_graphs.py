"""CUDA graphs for a prefill chunk alone in its step (one sequence, up to 512 tokens).

An eager prefill launches ~10 kernels and ~20 small torch ops per layer from Python. For a
128-token prompt that host work (measured on the H200 machine: ~20 ms for TinyLlama, ~33 ms
for Llama-3-8B, `benchmarks/prefill_host_time.py`) is several times the device's, and the
request's time to first token pays all of it. A chunk of T tokens alone in its step
(the first request after an idle spell, every request of a latency benchmark) replays
instead the graph of the smallest bucket >= T, rows past T padded: token 0, slot -1 (no
KV stored), outside the sequence's query range (the attention kernel skips them); only
the row of the chunk's last token goes through the LM head. Steps with several chunks
(a prefill beside decodes, batched prefills) stay eager.

Padding changes the projections' M, and cuBLAS picks its tiles by M: a graphed prefill
may round differently from an eager one of the same chunk (both bf16 computations of the
same function; tests/e2e/test_gpu.py bounds the difference).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.runner.batch import HostBatch
from titaninfer.runner.cuda_graph import capture_graph

logger = logging.getLogger(__name__)

BUCKETS = (16, 32, 64, 128, 256, 512)  # token counts captured
ENABLED = True  # False: lone prefills run eagerly too (A/B, debugging)


def bucket_for(num_tokens: int, buckets: tuple[int, ...] = BUCKETS) -> int | None:
    """The smallest captured size holding num_tokens, or None (run eagerly)."""
    for b in buckets:
        if b >= num_tokens:
            return b
    return None


class PrefillGraphs:
    """One graph per bucket; inputs live in static buffers, filled by two copies per step."""

    def __init__(self, model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 max_blocks_per_seq: int, block_size: int, device: torch.device, pool: Any = None,
                 buckets: tuple[int, ...] = BUCKETS) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.buckets = tuple(sorted(buckets))
        self.max_blocks = max_blocks_per_seq
        self.max_seq_len = max_blocks_per_seq * block_size
        self.device = device
        mt = self.buckets[-1]
        # int64 rows: ids, positions, slots, [row of the sampled token]; int32: query_start_loc
        # (2), seq_len (1), block table. Pinned staging of the same layout: one copy each.
        self._long = torch.zeros((4, mt), dtype=torch.int64, device=device)
        self._int = torch.zeros(3 + max_blocks_per_seq, dtype=torch.int32, device=device)
        self._long_staging = torch.zeros((4, mt), dtype=torch.int64, pin_memory=True)
        self._int_staging = torch.zeros(3 + max_blocks_per_seq, dtype=torch.int32, pin_memory=True)
        self._staging_free = torch.cuda.Event()
        self._staging_free.record()
        self.input_ids, self.positions, self.slot_mapping, sample = self._long.unbind(0)
        self.sample_row = sample[:1]
        self.query_start_loc = self._int[0:2]
        self.seq_lens = self._int[2:3]
        self.block_tables = self._int[3:].view(1, max_blocks_per_seq)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.pool = pool  # the CUDA-graph memory pool, shared with the decode graphs
        self.capture_s = 0.0

    def _meta(self, tokens: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:tokens], query_start_loc=self.query_start_loc,
            seq_lens=self.seq_lens, block_tables=self.block_tables, num_decodes=0,
            max_query_len=tokens, max_seq_len=self.max_seq_len,
            query_start_loc_cpu=[0, tokens], seq_lens_cpu=[tokens])

    def _forward(self, tokens: int) -> torch.Tensor:
        hidden = self.model(self.input_ids[:tokens], self.positions[:tokens], self.kv_caches, self._meta(tokens))
        return self.model.compute_logits(hidden.index_select(0, self.sample_row))

    @torch.inference_mode()
    def capture(self) -> None:
        t0 = time.perf_counter()
        # Capture-time inputs: every slot -1 (nothing stored), the chunk is the whole bucket.
        self.slot_mapping.fill_(-1)
        for tokens in reversed(self.buckets):  # largest first: smaller graphs reuse its memory
            self.query_start_loc[1] = tokens
            self.seq_lens.fill_(tokens)
            self.graphs[tokens], self.logits[tokens], self.pool = capture_graph(
                functools.partial(self._forward, tokens), self.device, self.pool)
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0
        logger.info("captured %d prefill graphs (tokens %s) in %.1f s", len(self.buckets), self.buckets, self.capture_s)

    def can_run(self, hb: HostBatch) -> bool:
        return (len(hb.chunks) == 1 and hb.num_decodes == 0 and bucket_for(hb.num_tokens, self.buckets) is not None
                and hb.block_tables.shape[1] <= self.max_blocks)

    def run(self, hb: HostBatch,
            fill_placeholders: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor | None:
        """Replay the graph for hb (one prefill chunk); returns float32 logits [1, V] of its
        last token if the chunk samples (a view valid until the next replay), else None."""
        t = hb.num_tokens
        tokens = bucket_for(t, self.buckets)
        assert tokens is not None
        nblk = hb.block_tables.shape[1]
        self._staging_free.synchronize()  # the previous step's copies have left the staging
        st = self._long_staging.numpy()
        st[0, :t] = np.where(hb.input_ids < 0, 0, hb.input_ids)
        st[1, :t] = hb.positions
        st[2, :t] = hb.slot_mapping
        st[0:2, t:tokens] = 0
        st[2, t:tokens] = -1  # padding rows store nothing
        st[3, 0] = t - 1
        ints = self._int_staging.numpy()
        ints[0], ints[1], ints[2] = 0, t, hb.seq_lens[0]
        ints[3:3 + nblk] = hb.block_tables[0]
        self._long.copy_(self._long_staging, non_blocking=True)
        self._int.copy_(self._int_staging, non_blocking=True)
        self._staging_free.record()
        if fill_placeholders is not None:
            fill_placeholders(self.input_ids)
        self.graphs[tokens].replay()
        return self.logits[tokens] if hb.sample_rows else None
