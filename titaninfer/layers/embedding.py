"""The step's first op on the skinny (decode) path: embeddings plus the residual
epilogue's accumulators in one kernel (`kernels/embedding.py`).

The projections after a residual add normalise from sums of squares that the add's GEMV
accumulated (`layers.linear.Stream.sumsq`); their accumulators are zeroed once per
forward. Here the same kernel that gathers the embeddings zeroes them and writes the
embeddings' own sums, so the first layer's norm is a prologue like every other one.
"""

from __future__ import annotations

import torch
from torch import nn

from titaninfer.layers.linear import Stream, skinny_rows_ok


def embedding_kernel_ok(input_ids: torch.Tensor, embedding: nn.Embedding) -> bool:
    """True where `embed_with_sums` runs: the skinny path's batches (a few decode tokens),
    judged on a [T, H] view shaped like the embeddings it would produce."""
    return skinny_rows_ok(embedding.weight[:1].expand(input_ids.shape[0], -1))


def embed_with_sums(input_ids: torch.Tensor, embedding: nn.Embedding, n_sums: int) -> tuple[Stream, torch.Tensor]:
    """(Stream(embeddings, sums of their squares), n_sums zeroed accumulators [n_sums, T,
    slots]) for the `linear_residual` calls of the forward."""
    from titaninfer.kernels.embedding import embedding_and_sumsq

    x, sums = embedding_and_sumsq(input_ids, embedding.weight, n_sums + 1)
    return Stream(x, None, sums[n_sums]), sums[:n_sums]
