"""Standard workloads: seeded, within their ranges, overrides and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from titaninfer.bench.workloads import (
    STANDARD_WORKLOADS,
    apply_overrides,
    get_workload,
    materialize,
    parse_range,
)


def test_standard_names_match_benchmarks_md() -> None:
    assert set(STANDARD_WORKLOADS) == {"decode-latency", "offline-random", "serving-sharegpt-like",
                                       "shared-prefix", "long-context"}


def test_decode_latency_shape() -> None:
    w = materialize(get_workload("decode-latency"), 49152, 8192)
    assert len(w.requests) == 1 and w.requests[0].prompt_len == 128 and w.requests[0].output_len == 256
    assert w.spec.ignore_eos


def test_offline_random_is_seeded_and_in_range() -> None:
    spec = get_workload("offline-random")
    a, b = materialize(spec, 32000, 4096), materialize(spec, 32000, 4096)
    assert [r.prompt_ids for r in a.requests] == [r.prompt_ids for r in b.requests]
    assert len(a.requests) == 256
    assert all(100 <= r.prompt_len <= 1024 and 100 <= r.output_len <= 1024 for r in a.requests)
    assert all(r.arrival_offset_s == 0.0 for r in a.requests)
    assert all(100 <= t < 32000 for r in a.requests for t in r.prompt_ids)  # no special ids
    c = materialize(spec.replace(seed=1), 32000, 4096)
    assert [r.prompt_ids for r in c.requests] != [r.prompt_ids for r in a.requests]


def test_overrides() -> None:
    spec = apply_overrides(get_workload("offline-random"), num_requests=4, input_len=16, output_len_range="3:5",
                           seed=7)
    w = materialize(spec, 1000, 2048)
    assert len(w.requests) == 4 and {r.prompt_len for r in w.requests} == {16}
    assert all(3 <= r.output_len <= 5 for r in w.requests) and spec.seed == 7
    assert parse_range("100:1024") == (100, 1024) and parse_range("7") == (7, 7)


@pytest.mark.parametrize("bad", ["a:b", "1:2:3", ""])
def test_bad_range(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_range(bad)


def test_invalid_specs() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        get_workload("nope")
    with pytest.raises(ValueError):
        apply_overrides(get_workload("offline-random"), input_len_range="10:5")
    with pytest.raises(ValueError):
        apply_overrides(get_workload("offline-random"), num_requests=0)


def test_serving_arrivals_are_poisson() -> None:
    spec = apply_overrides(get_workload("serving-sharegpt-like"), num_requests=2000, request_rate=10.0)
    w = materialize(spec, 32000, 4096)
    offs = [r.arrival_offset_s for r in w.requests]
    assert offs[0] == 0.0 and all(b >= a for a, b in zip(offs, offs[1:], strict=False))
    assert np.mean(np.diff(offs)) == pytest.approx(0.1, rel=0.1)
    # ShareGPT-like lengths: long right tail, median near 200 prompt tokens.
    assert 120 < np.median([r.prompt_len for r in w.requests]) < 300


def test_shared_prefix_groups_share_their_prefix() -> None:
    spec = apply_overrides(get_workload("shared-prefix"), num_requests=8, prefix_len=32, num_groups=2)
    w = materialize(spec, 5000, 4096)
    g0 = [r for r in w.requests if r.group == 0]
    g1 = [r for r in w.requests if r.group == 1]
    assert all(r.prompt_ids[:32] == g0[0].prompt_ids[:32] for r in g0)
    assert g0[0].prompt_ids[:32] != g1[0].prompt_ids[:32]


def test_long_context_drops_what_does_not_fit() -> None:
    spec = get_workload("long-context")
    w = materialize(spec, 32000, 70000)
    assert [r.prompt_len for r in w.requests] == [32768, 65536]
    assert any("131072" in n for n in w.notes)
    with pytest.raises(ValueError, match="context"):
        materialize(spec, 32000, 8192)
    assert math.isinf(spec.request_rate)


def test_git_sha_override(monkeypatch) -> None:
    from titaninfer.bench.hostinfo import git_state

    monkeypatch.setenv("TITANINFER_GIT_SHA", "0123abc")
    assert git_state() == {"sha": "0123abc", "dirty": None}
    monkeypatch.delenv("TITANINFER_GIT_SHA")
    assert git_state()["sha"] != "0123abc"
