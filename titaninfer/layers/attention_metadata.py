"""What an attention layer needs to know about a flattened, mixed batch.

The batch is varlen and unpadded: sequence i's tokens are rows
query_start_loc[i] .. query_start_loc[i+1] of every activation. Decode sequences (one
query each) come first, `num_decodes` of them, then prefill chunks (which may continue a
cached prefix). Built by the runner; read-only for the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64: KV slot of each token (-1: padding, not stored)
    query_start_loc: torch.Tensor  # [B+1] int32, on the model's device
    seq_lens: torch.Tensor  # [B] int32: context length including this step's tokens
    block_tables: torch.Tensor  # [B, max_blocks] int32, padded with 0
    num_decodes: int  # sequences 0..num_decodes-1 have one query each
    max_query_len: int
    max_seq_len: int
    query_start_loc_cpu: list[int]
    seq_lens_cpu: list[int]

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def num_prefills(self) -> int:
        return self.num_seqs - self.num_decodes
