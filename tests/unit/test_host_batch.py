"""build_host_batch vs a per-token brute force: order (decodes first), positions, slots,
block tables padded with zeros, sample rows and placeholders."""

from __future__ import annotations

import random

import numpy as np

from titaninfer.runner.batch import PLACEHOLDER, build_host_batch
from titaninfer.types import ScheduledChunk


def test_build_host_batch_matches_brute_force() -> None:
    rng = random.Random(0)
    bs = 16
    for _ in range(50):
        chunks, tables = [], {}
        for i in range(rng.randint(1, 12)):
            start = rng.randint(0, 200)
            n = 1 if rng.random() < 0.5 and start > 0 else rng.randint(1, 40)
            ids = [rng.choice([PLACEHOLDER, rng.randint(0, 999)]) for _ in range(n)]
            rid = f"r{i}"
            tables[rid] = [rng.randint(0, 5000) for _ in range(-(-(start + n) // bs) + rng.randint(0, 3))]
            chunks.append(ScheduledChunk(rid, ids, start, [], rng.random() < 0.7))
        hb = build_host_batch(chunks, tables, bs)
        order = [c for c in chunks if len(c.token_ids) == 1 and c.start_pos > 0]
        order += [c for c in chunks if c not in order]
        assert [c.request_id for c in hb.chunks] == [c.request_id for c in order]
        assert hb.num_decodes == sum(1 for c in order if len(c.token_ids) == 1 and c.start_pos > 0)
        width = max(len(tables[c.request_id]) for c in order)
        row = 0
        for i, c in enumerate(order):
            t = tables[c.request_id]
            assert hb.block_tables[i].tolist() == t + [0] * (width - len(t))
            assert hb.seq_lens[i] == c.start_pos + len(c.token_ids)
            for j, tok in enumerate(c.token_ids):
                pos = c.start_pos + j
                assert hb.input_ids[row] == tok and hb.positions[row] == pos
                # For a decode row pos is seq_len - 1: it writes its sequence's last position
                # only, which the decode attention's loads before its PDL wait rely on.
                assert hb.slot_mapping[row] == t[pos // bs] * bs + pos % bs
                row += 1
        assert hb.input_ids.shape == (row,)
        assert hb.sample_rows == [int(hb.query_start_loc[i + 1]) - 1 for i, c in enumerate(order) if c.sample]
        assert hb.placeholder_rows == np.flatnonzero(hb.input_ids == PLACEHOLDER).tolist()


def test_prefill_graph_buckets() -> None:
    """A lone prefill of T tokens replays the smallest captured size >= T; none past the largest."""
    from titaninfer.runner.prefill_graphs import BUCKETS, bucket_for

    assert [bucket_for(t) for t in (1, 16, 17, 100, 128, 129, 512)] == [16, 16, 32, 128, 128, 256, 512]
    assert bucket_for(BUCKETS[-1] + 1) is None
    assert bucket_for(40, (32, 64)) == 64 and bucket_for(65, (32, 64)) is None
