"""CUDA graphs for decode steps: model forward + LM head captured once per batch size.

A decode step launches hundreds of small kernels; replaying a captured graph removes the
per-launch CPU cost, which at batch 1 is most of the step. Graphs read their inputs from
static device buffers; a batch of B sequences runs on the smallest captured size >= B
with the extra rows padded (seq_len 0: zero attention output; slot -1: nothing stored;
their logits are ignored). Batches larger than the largest size, or containing prefill
chunks, run eagerly.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.runner.batch import HostBatch

logger = logging.getLogger(__name__)

T = TypeVar("T")


def capture_graph(forward: Callable[[], T], device: torch.device, pool: Any) -> tuple[torch.cuda.CUDAGraph, T, Any]:
    """Capture one call of `forward` into a CUDA graph on the memory pool `pool` (None: the
    graph's own). Two uncaptured calls first (Triton compiles, cuBLAS picks its kernels,
    lazily allocated buffers exist), so the capture records only kernel launches.
    Returns (graph, forward's output, living in the pool, the pool). Capture the largest
    shape first: smaller graphs then reuse its memory."""
    for _ in range(2):
        forward()
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = forward()
    return graph, out, pool if pool is not None else graph.pool()


def default_capture_sizes(max_num_seqs: int) -> list[int]:
    sizes = [1, 2, 4, 8] + list(range(16, 257, 16))
    return [s for s in sizes if s <= max_num_seqs] or [1]


class DecodeGraphs:
    def __init__(self, model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                 sizes: list[int], max_blocks_per_seq: int, block_size: int, device: torch.device) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.sizes = sorted(sizes)
        self.max_bs = self.sizes[-1]
        self.block_size = block_size
        self.max_blocks = max_blocks_per_seq
        self.max_seq_len = max_blocks_per_seq * block_size  # static bound for the kernels
        self.device = device
        mb = self.max_bs
        # ids, positions and slots in one buffer (rows of one [3, mb] tensor) and seq_lens in
        # its own dtype, so that a step's inputs arrive in two whole-buffer copies (about
        # 6 KB at most) instead of one per field plus a cast kernel.
        self._ids_pos_slots = torch.zeros((3, mb), dtype=torch.int64, device=device)
        self.input_ids, self.positions, self.slot_mapping = self._ids_pos_slots.unbind(0)
        self.slot_mapping.fill_(-1)
        self.seq_lens = torch.zeros(mb, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros((mb, max_blocks_per_seq), dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(mb + 1, dtype=torch.int32, device=device)
        # Pinned staging for the per-step host->device copies: [ids, pos, slots], seq_lens
        self._staging = torch.zeros((3, mb), dtype=torch.int64, pin_memory=True)
        self._staging_lens = torch.zeros(mb, dtype=torch.int32, pin_memory=True)
        self._staging_tables = torch.zeros((mb, max_blocks_per_seq), dtype=torch.int32, pin_memory=True)
        self._staging_free = torch.cuda.Event()
        self._staging_free.record()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.pool = None
        self.capture_s = 0.0

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:bs], query_start_loc=self.query_start_loc[:bs + 1],
            seq_lens=self.seq_lens[:bs], block_tables=self.block_tables[:bs], num_decodes=bs,
            max_query_len=1, max_seq_len=self.max_seq_len,
            query_start_loc_cpu=list(range(bs + 1)), seq_lens_cpu=[1] * bs)

    def _forward(self, bs: int) -> torch.Tensor:
        hidden = self.model(self.input_ids[:bs], self.positions[:bs], self.kv_caches, self._meta(bs))
        return self.model.compute_logits(hidden)

    @torch.inference_mode()
    def capture(self) -> None:
        t0 = time.perf_counter()
        self.seq_lens.fill_(1)  # capture-time values: every row attends to one token
        for bs in reversed(self.sizes):  # largest first so smaller graphs reuse its pool
            forward = functools.partial(self._forward, bs)
            self.graphs[bs], self.logits[bs], self.pool = capture_graph(forward, self.device, self.pool)
        self.seq_lens.zero_()
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0
        logger.info("captured %d decode graphs (batch %s) in %.1f s", len(self.sizes), self.sizes, self.capture_s)

    def size_for(self, num_seqs: int) -> int | None:
        for s in self.sizes:
            if s >= num_seqs:
                return s
        return None

    def can_run(self, hb: HostBatch) -> bool:
        return (hb.all_decode and self.size_for(len(hb.chunks)) is not None
                and hb.block_tables.shape[1] <= self.max_blocks)

    def run(self, hb: HostBatch, fill_placeholders=None) -> torch.Tensor:
        """Replay the graph for hb (all decodes); returns logits [B, V] (a view into the
        graph's output, valid until the next replay)."""
        b = len(hb.chunks)
        bs = self.size_for(b)
        assert bs is not None
        nblk = hb.block_tables.shape[1]
        # The previous step's copies must have left the staging buffers before we refill them.
        self._staging_free.synchronize()
        st = self._staging.numpy()
        lens = self._staging_lens.numpy()
        st[0, :b] = np.where(hb.input_ids < 0, 0, hb.input_ids)
        st[1, :b] = hb.positions
        st[2, :b] = hb.slot_mapping
        lens[:b] = hb.seq_lens
        st[0, b:] = 0
        st[1, b:] = 0
        st[2, b:] = -1  # padding rows store nothing
        lens[b:] = 0  # and attend to nothing
        self._staging_tables.numpy()[:b, :nblk] = hb.block_tables
        # Whole buffers (contiguous on both sides): one copy each, no staging on the device.
        self._ids_pos_slots.copy_(self._staging, non_blocking=True)
        self.seq_lens.copy_(self._staging_lens, non_blocking=True)
        self.block_tables[:b, :nblk].copy_(self._staging_tables[:b, :nblk], non_blocking=True)
        self._staging_free.record()
        if fill_placeholders is not None:
            fill_placeholders(self.input_ids)
        self.graphs[bs].replay()
        return self.logits[bs][:b]
