"""GraphInputs: one buffer per decode-graph size; a step's inputs land in their views with
one copy of the buffer's head, padding rows store and attend to nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from titaninfer.runner.cuda_graph import GraphInputs


# (8, 600, 7): 7 table rows of 2.4 KB pass the one-copy limit: a second, strided copy.
@pytest.mark.parametrize("rows,max_blocks,b", [(1, 7, 1), (3, 5, 2), (8, 129, 5), (16, 3, 16), (8, 600, 7)])
def test_staged_inputs_arrive_in_their_views(rows, max_blocks, b):
    inp = GraphInputs(rows, max_blocks, torch.device("cpu"))
    rng = np.random.default_rng(rows * 1000 + max_blocks)
    for _ in range(3):  # refills leave nothing of the previous step in the used rows
        nblk = int(rng.integers(1, max_blocks + 1))
        ids = rng.integers(-1, 50000, b)  # -1: a placeholder the runner fills on the device
        pos = rng.integers(0, 4000, b)
        slots = rng.integers(0, 1 << 40, b)  # int64 slots survive
        lens = rng.integers(1, 4000, b).astype(np.int32)
        tables = rng.integers(0, 1 << 30, (b, nblk)).astype(np.int32)
        inp.stage(b, ids, pos, slots, lens, tables)
        assert inp.input_ids.tolist() == np.where(ids < 0, 0, ids).tolist() + [0] * (rows - b)
        assert inp.positions.tolist() == pos.tolist() + [0] * (rows - b)
        assert inp.slot_mapping.tolist() == slots.tolist() + [-1] * (rows - b)
        assert inp.seq_lens.tolist() == lens.tolist() + [0] * (rows - b)
        assert inp.seq_lens.dtype == torch.int32 and inp.block_tables.dtype == torch.int32
        assert torch.equal(inp.block_tables[:b, :nblk], torch.from_numpy(tables))
        # The views do not overlap: every field kept its own values.
        assert inp.input_ids.data_ptr() < inp.positions.data_ptr() < inp.slot_mapping.data_ptr() \
            < inp.seq_lens.data_ptr() < inp.block_tables.data_ptr()
        assert inp.block_tables.data_ptr() + inp.block_tables.numel() * 4 <= \
            inp.device_buf.data_ptr() + inp.device_buf.numel() * 8


def test_a_step_replays_the_smallest_context_tier_that_holds_it():
    from titaninfer.runner.cuda_graph import tier_for

    tiers = (1024, 40960)
    assert [tier_for(tiers, n) for n in (1, 1023, 1024, 1025, 40960)] == [1024, 1024, 1024, 40960, 40960]
    assert tier_for((2048,), 7) == 2048


def test_pytorch_kernels_have_one_context_tier():
    """Only the Triton decode attention changes its grid with the context bound; on a CPU
    (the PyTorch references) every step has one tier, the full context."""
    from titaninfer.runner.cuda_graph import decode_context_tiers

    caches = [(torch.zeros(4, 16, 8, 128), torch.zeros(4, 16, 8, 128))]
    assert decode_context_tiers(caches, 1, 40960) == (40960,)
    assert decode_context_tiers([], 1, 2048) == (2048,)
