"""Flatten one step's chunks into model inputs and attention metadata.

Decode chunks (one token over a history) are placed first so attention can send them to
the decode kernel; the order of the rest is kept. Index arithmetic is done in NumPy on the
host, then each array crosses to the device once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from titaninfer.layers.attention_metadata import AttentionMetadata
from titaninfer.types import ScheduledChunk


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttentionMetadata
    chunks: list[ScheduledChunk]  # in batch order
    sample_rows: list[int]  # row in the flattened batch of each sampled chunk's last token
    sample_chunk_index: list[int]  # which chunk each sample row belongs to


def order_chunks(chunks: list[ScheduledChunk]) -> list[ScheduledChunk]:
    decodes = [c for c in chunks if len(c.token_ids) == 1 and c.start_pos > 0]
    others = [c for c in chunks if not (len(c.token_ids) == 1 and c.start_pos > 0)]
    return decodes + others


def build_inputs(chunks: list[ScheduledChunk], block_tables: dict[str, list[int]],
                 block_size: int, device: torch.device) -> ModelInputs:
    chunks = order_chunks(chunks)
    num_decodes = sum(1 for c in chunks if len(c.token_ids) == 1 and c.start_pos > 0)
    q_lens = np.fromiter((len(c.token_ids) for c in chunks), dtype=np.int64, count=len(chunks))
    starts = np.fromiter((c.start_pos for c in chunks), dtype=np.int64, count=len(chunks))
    seq_lens = starts + q_lens
    qsl = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(q_lens, out=qsl[1:])
    total = int(qsl[-1])

    input_ids = np.fromiter((t for c in chunks for t in c.token_ids), dtype=np.int64, count=total)
    # positions: start_pos + 0..q_len-1 for each chunk, without a Python loop per token
    seq_of_token = np.repeat(np.arange(len(chunks)), q_lens)
    positions = starts[seq_of_token] + (np.arange(total) - qsl[:-1][seq_of_token])

    max_blocks = max(len(block_tables[c.request_id]) for c in chunks)
    tables = np.zeros((len(chunks), max_blocks), dtype=np.int64)
    for i, c in enumerate(chunks):
        t = block_tables[c.request_id]
        tables[i, :len(t)] = t
    slot_mapping = tables[seq_of_token, positions // block_size] * block_size + positions % block_size

    sample_rows = [int(qsl[i + 1]) - 1 for i, c in enumerate(chunks) if c.sample]
    sample_chunk_index = [i for i, c in enumerate(chunks) if c.sample]

    def dev(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(a).to(device=device, dtype=dtype, non_blocking=True)

    meta = AttentionMetadata(
        slot_mapping=dev(slot_mapping, torch.int64),
        query_start_loc=dev(qsl, torch.int32),
        seq_lens=dev(seq_lens, torch.int32),
        block_tables=dev(tables, torch.int32),
        num_decodes=num_decodes,
        max_query_len=int(q_lens.max()),
        max_seq_len=int(seq_lens.max()),
        query_start_loc_cpu=qsl.tolist(),
        seq_lens_cpu=seq_lens.tolist(),
    )
    return ModelInputs(
        input_ids=dev(input_ids, torch.int64),
        positions=dev(positions, torch.int64),
        meta=meta,
        chunks=chunks,
        sample_rows=sample_rows,
        sample_chunk_index=sample_chunk_index,
    )
