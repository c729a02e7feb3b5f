"""Flatten one step's chunks into model inputs and attention metadata.

Decode chunks (one token over a history) are placed first so attention can send them to
the decode kernel; the order of the rest is kept. Index arithmetic is done in NumPy on the
host (`HostBatch`), then each array crosses to the device once (`to_device`).

A token id of -1 is a placeholder for a token the previous, still running step samples
(asynchronous scheduling); the runner fills it on the device.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.types import ScheduledChunk

PLACEHOLDER = -1


def is_decode(c: ScheduledChunk) -> bool:
    return len(c.token_ids) == 1 and c.start_pos > 0


@dataclass
class HostBatch:
    chunks: list[ScheduledChunk]  # batch order: decodes first
    num_decodes: int
    input_ids: np.ndarray  # [T] int64 (PLACEHOLDER where unknown yet)
    positions: np.ndarray  # [T] int64
    slot_mapping: np.ndarray  # [T] int64
    query_start_loc: np.ndarray  # [B+1] int64
    seq_lens: np.ndarray  # [B] int64
    block_tables: np.ndarray  # [B, max_blocks] int64
    sample_rows: list[int]  # flattened row of each sampled chunk's last token
    sample_chunk_index: list[int]  # chunk index of each sample row
    placeholder_rows: list[int]  # rows whose token comes from the previous step
    placeholder_request_ids: list[str]

    @property
    def num_tokens(self) -> int:
        return int(self.query_start_loc[-1])

    @property
    def all_decode(self) -> bool:
        return self.num_decodes == len(self.chunks)


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttentionMetadata


def build_host_batch(chunks: list[ScheduledChunk], block_tables: dict[str, list[int]],
                     block_size: int) -> HostBatch:
    decodes = [c for c in chunks if is_decode(c)]
    chunks = decodes + [c for c in chunks if not is_decode(c)]
    n = len(chunks)
    q_lens = np.fromiter((len(c.token_ids) for c in chunks), dtype=np.int64, count=n)
    starts = np.fromiter((c.start_pos for c in chunks), dtype=np.int64, count=n)
    seq_lens = starts + q_lens
    qsl = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(q_lens, out=qsl[1:])
    total = int(qsl[-1])

    input_ids = np.fromiter((t for c in chunks for t in c.token_ids), dtype=np.int64, count=total)
    seq_of_token = np.repeat(np.arange(n), q_lens)
    positions = starts[seq_of_token] + (np.arange(total) - qsl[:-1][seq_of_token])

    # One pass over all block ids and one masked scatter: per-row list -> array conversions
    # cost 0.7 ms per step at 256 requests, this 0.5 ms.
    rows = [block_tables[c.request_id] for c in chunks]
    n_blocks = np.fromiter((len(t) for t in rows), dtype=np.int64, count=n)
    tables = np.zeros((n, int(n_blocks.max())), dtype=np.int64)
    tables[np.arange(tables.shape[1])[None, :] < n_blocks[:, None]] = np.fromiter(
        itertools.chain.from_iterable(rows), dtype=np.int64, count=int(n_blocks.sum()))
    slot_mapping = tables[seq_of_token, positions // block_size] * block_size + positions % block_size

    placeholder_rows = np.flatnonzero(input_ids == PLACEHOLDER).tolist()
    return HostBatch(
        chunks=chunks,
        num_decodes=len(decodes),
        input_ids=input_ids,
        positions=positions,
        slot_mapping=slot_mapping,
        query_start_loc=qsl,
        seq_lens=seq_lens,
        block_tables=tables,
        sample_rows=[int(qsl[i + 1]) - 1 for i, c in enumerate(chunks) if c.sample],
        sample_chunk_index=[i for i, c in enumerate(chunks) if c.sample],
        placeholder_rows=placeholder_rows,
        placeholder_request_ids=[chunks[int(seq_of_token[r])].request_id for r in placeholder_rows],
    )


def host_to_device(a: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy a host array to the device without synchronising: from pageable memory a CUDA
    copy waits for all queued GPU work, which would undo the overlap of host and device."""
    t = torch.from_numpy(a)
    if dtype is not None and device.type == "cuda":
        t = t.to(dtype)  # convert on the host: the copy then moves fewer bytes
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device=device, dtype=dtype, non_blocking=True)


def to_device(hb: HostBatch, device: torch.device) -> ModelInputs:
    def dev(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return host_to_device(a, device, dtype)

    meta = AttentionMetadata(
        slot_mapping=dev(hb.slot_mapping, torch.int64),
        query_start_loc=dev(hb.query_start_loc, torch.int32),
        seq_lens=dev(hb.seq_lens, torch.int32),
        block_tables=dev(hb.block_tables, torch.int32),
        num_decodes=hb.num_decodes,
        max_query_len=int((hb.query_start_loc[1:] - hb.query_start_loc[:-1]).max()),
        max_seq_len=int(hb.seq_lens.max()),
        query_start_loc_cpu=hb.query_start_loc.tolist(),
        seq_lens_cpu=hb.seq_lens.tolist(),
    )
    return ModelInputs(input_ids=dev(hb.input_ids, torch.int64), positions=dev(hb.positions, torch.int64),
                       meta=meta)
