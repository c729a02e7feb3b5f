"""CUDA graphs for decode steps: model forward + LM head captured once per batch size.

A decode step launches hundreds of small kernels; replaying a captured graph removes the
per-launch CPU cost, which at batch 1 is most of the step. Graphs read their inputs from
static device buffers; a batch of B sequences runs on the smallest captured size >= B
with the extra rows padded (seq_len 0: zero attention output; slot -1: nothing stored;
their logits are ignored). Batches larger than the largest size, or containing prefill
chunks, run eagerly.

The decode attention's grid depends on a static bound of the context: small batches get
one program per SM while their contexts are short and more programs beyond
(`decode_attention.context_tiers`). Where the two differ a size has one graph per context
tier, and a step replays the smallest tier that holds its longest sequence.

Around a replay, the device runs only what the graph cannot hold: the step's inputs
arrive in one host-to-device copy where the batch is small (each graph reads ids,
positions, slots, lengths and block-table rows from one buffer of its own, `GraphInputs`),
and graphs of up to GREEDY_IN_GRAPH_MAX_BATCH rows end with the greedy argmax of every
row, so an all-greedy step needs no sampling launch after the replay.
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
from titaninfer.layers.dispatch import use_triton
from titaninfer.runner.batch import HostBatch

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Graphs of at most this many rows also take each row's greedy argmax (`greedy_tokens`):
# a batch-1 step then saves the argmax launch and its gap (~5 us of a ~0.75 ms TinyLlama
# step); a step that samples pays the unused argmax, ~1-3 us at these sizes. 0: never.
GREEDY_IN_GRAPH_MAX_BATCH = 8
# The block-table rows travel in the inputs' one copy while they are at most this many
# bytes (whole rows: stale entries past a row's length are never read); else a second,
# strided copy of the used part.
_ONE_COPY_MAX_TABLE_BYTES = 16 << 10


class GraphInputs:
    """The static inputs of the graph for `rows` sequences, in one int64 buffer so that a
    step's inputs arrive in one copy of its head: [ids | positions | slots] (int64 each),
    then seq_lens and the block tables [rows, max_blocks] (int32 views of the words after
    them). A pinned host buffer of the same layout stages them. Per graph size, not shared:
    a batch-1 step then copies ~0.5 KB (a shared buffer sized for 256 rows took 7 KB and
    1.5 us more of device time per step on an H200)."""

    def __init__(self, rows: int, max_blocks: int, device: torch.device) -> None:
        self.rows, self.max_blocks = rows, max_blocks
        self.tables_word = 3 * rows + -(-rows // 2)
        words = self.tables_word + -(-(rows * max_blocks) // 2)
        self.device_buf = torch.zeros(words, dtype=torch.int64, device=device)
        self.staging = torch.zeros(words, dtype=torch.int64, pin_memory=device.type == "cuda")
        self.input_ids, self.positions, self.slot_mapping, self.seq_lens, self.block_tables = \
            self.views(self.device_buf)
        self.slot_mapping.fill_(-1)

    def views(self, buf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(ids, positions, slots [rows] int64, seq_lens [rows] int32, block tables [rows,
        max_blocks] int32) in `buf` (the device buffer or the staging)."""
        r = self.rows
        ints = buf[3 * r:].view(torch.int32)
        at = 2 * (self.tables_word - 3 * r)
        return (buf[:r], buf[r:2 * r], buf[2 * r:3 * r], ints[:r],
                ints[at:at + r * self.max_blocks].view(r, self.max_blocks))

    def stage(self, b: int, input_ids: np.ndarray, positions: np.ndarray, slots: np.ndarray,
              seq_lens: np.ndarray, block_tables: np.ndarray) -> None:
        """Write b sequences' inputs into the staging (rows past b: padding that stores
        nothing and attends to nothing) and copy them to the device, asynchronously."""
        ids, pos, slot, lens, tables = (t.numpy() for t in self.views(self.staging))
        ids[:b] = np.where(input_ids < 0, 0, input_ids)
        pos[:b], slot[:b], lens[:b] = positions, slots, seq_lens
        ids[b:], pos[b:], slot[b:], lens[b:] = 0, 0, -1, 0
        nblk = block_tables.shape[1]
        tables[:b, :nblk] = block_tables
        if b * self.max_blocks * 4 <= _ONE_COPY_MAX_TABLE_BYTES:  # one copy: all but unused rows
            words = self.tables_word + -(-(b * self.max_blocks) // 2)
            self.device_buf[:words].copy_(self.staging[:words], non_blocking=True)
        else:
            self.device_buf[:self.tables_word].copy_(self.staging[:self.tables_word], non_blocking=True)
            self.block_tables[:b, :nblk].copy_(self.views(self.staging)[4][:b, :nblk], non_blocking=True)


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


def decode_context_tiers(kv_caches: list[tuple[torch.Tensor, torch.Tensor]], rows: int,
                         max_seq_len: int) -> tuple[int, ...]:
    """The static context bounds (ascending, the last = max_seq_len) at which a decode step
    of `rows` sequences over these caches changes its attention grid: one for the PyTorch
    kernels, up to two for Triton's (`decode_attention.context_tiers`)."""
    k_cache = kv_caches[0][0] if kv_caches else None
    if k_cache is None or not use_triton(k_cache):
        return (max_seq_len,)
    from titaninfer.kernels.decode_attention import context_tiers
    from titaninfer.kernels.triton_common import device_sms

    return context_tiers(rows, k_cache.shape[2], max_seq_len, device_sms(k_cache.device), k_cache.shape[3])


def tier_for(tiers: tuple[int, ...], longest: int) -> int:
    """The smallest tier that holds a sequence of `longest` tokens (the last one if none)."""
    return next((t for t in tiers if t >= longest), tiers[-1])


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
        self.inputs = {bs: GraphInputs(bs, max_blocks_per_seq, device) for bs in self.sizes}
        self.query_start_loc = torch.arange(mb + 1, dtype=torch.int32, device=device)
        self._staging_free = torch.cuda.Event()
        self._staging_free.record()
        # Context tiers per size (ascending static bounds, the last = max_seq_len); graphs
        # and their logits are keyed (size, tier).
        self.tiers = {bs: decode_context_tiers(kv_caches, bs, self.max_seq_len) for bs in self.sizes}
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.logits: dict[tuple[int, int], torch.Tensor] = {}
        # Each row's greedy token, written by the graphs of up to GREEDY_IN_GRAPH_MAX_BATCH rows
        self.greedy_tokens = torch.zeros(mb, dtype=torch.int64, device=device)
        self._greedy_sizes: set[int] = set()
        self.pool = None
        self.capture_s = 0.0

    def _meta(self, bs: int, tier: int) -> AttentionMetadata:
        inp = self.inputs[bs]
        return AttentionMetadata(
            slot_mapping=inp.slot_mapping, query_start_loc=self.query_start_loc[:bs + 1],
            seq_lens=inp.seq_lens, block_tables=inp.block_tables, num_decodes=bs,
            max_query_len=1, max_seq_len=tier,
            query_start_loc_cpu=list(range(bs + 1)), seq_lens_cpu=[1] * bs)

    def _forward(self, bs: int, tier: int) -> torch.Tensor:
        """One decode step of bs rows whose sequences are at most `tier` tokens long."""
        inp = self.inputs[bs]
        hidden = self.model(inp.input_ids, inp.positions, self.kv_caches, self._meta(bs, tier))
        logits = self.model.compute_logits(hidden)
        if bs in self._greedy_sizes:
            from titaninfer.kernels.argmax import greedy_argmax

            greedy_argmax(logits, out=self.greedy_tokens[:bs])
        return logits

    @torch.inference_mode()
    def capture(self) -> None:
        t0 = time.perf_counter()
        for inp in self.inputs.values():
            inp.seq_lens.fill_(1)  # capture-time values: every row attends to one token
        if use_triton(self.query_start_loc):  # the argmax kernel is Triton's (NaN-free logits)
            self._greedy_sizes = {s for s in self.sizes if s <= GREEDY_IN_GRAPH_MAX_BATCH}
        for bs in reversed(self.sizes):  # largest first so smaller graphs reuse its pool
            for tier in reversed(self.tiers[bs]):
                forward = functools.partial(self._forward, bs, tier)
                key = (bs, tier)
                self.graphs[key], self.logits[key], self.pool = capture_graph(forward, self.device, self.pool)
        for inp in self.inputs.values():
            inp.seq_lens.zero_()
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0
        logger.info("captured %d decode graphs (batch %s) in %.1f s", len(self.graphs), self.sizes, self.capture_s)

    def size_for(self, num_seqs: int) -> int | None:
        for s in self.sizes:
            if s >= num_seqs:
                return s
        return None

    def key_for(self, num_seqs: int, max_seq_len: int) -> tuple[int, int]:
        """(size, tier) of the graph for num_seqs sequences of at most max_seq_len tokens
        (num_seqs within the largest size, max_seq_len within max_seq_len)."""
        bs = self.size_for(num_seqs)
        assert bs is not None and max_seq_len <= self.max_seq_len
        return bs, tier_for(self.tiers[bs], max_seq_len)

    def can_run(self, hb: HostBatch) -> bool:
        return (hb.all_decode and self.size_for(len(hb.chunks)) is not None
                and hb.block_tables.shape[1] <= self.max_blocks)

    def greedy_tokens_for(self, num_seqs: int) -> torch.Tensor | None:
        """The greedy tokens [num_seqs] int64 that the last replay for num_seqs rows wrote
        (a view of a static buffer, valid until the next replay), or None where that
        graph has no argmax."""
        bs = self.size_for(num_seqs)
        return self.greedy_tokens[:num_seqs] if bs in self._greedy_sizes else None

    def run(self, hb: HostBatch, fill_placeholders=None) -> torch.Tensor:
        """Replay the graph for hb (all decodes); returns logits [B, V] (a view into the
        graph's output, valid until the next replay)."""
        b = len(hb.chunks)
        key = self.key_for(b, int(hb.seq_lens[:b].max()))
        inp = self.inputs[key[0]]
        # The previous step's copies must have left the staging buffers before we refill one.
        self._staging_free.synchronize()
        inp.stage(b, hb.input_ids, hb.positions, hb.slot_mapping, hb.seq_lens, hb.block_tables)
        self._staging_free.record()
        if fill_placeholders is not None:
            fill_placeholders(inp.input_ids)
        self.graphs[key].replay()
        return self.logits[key][:b]
