"""PrefixCachingKVManager rules, one at a time, on hand-made token sequences."""

from __future__ import annotations

import pytest

from titaninfer.kv.manager import KVCacheManager
from titaninfer.prefix import (
    ExactPrefixHasher,
    KeyedBlockHasher,
    PrefixCachingKVManager,
)

BS = 4


def run(kv: PrefixCachingKVManager, rid: str, tokens: list[int], salt: str | None = None) -> int:
    """Admit, compute everything, commit (as the scheduler does); returns the cached count."""
    cached = kv.match_prefix(rid, tokens, salt)
    assert kv.allocate_slots(rid, len(tokens)) is not None
    kv.commit_full_blocks(rid, tokens, len(tokens))
    kv.check_invariants()
    return cached


def test_is_a_kv_cache_manager_and_policy_is_configurable() -> None:
    kv = PrefixCachingKVManager(8, BS, "s3fifo")
    assert isinstance(kv, KVCacheManager) and kv.policy.name == "s3fifo"
    with pytest.raises(ValueError, match="lru, lfu, arc, s3fifo"):
        PrefixCachingKVManager(8, BS, "random")


def test_match_covers_whole_blocks_and_never_the_last_token() -> None:
    kv = PrefixCachingKVManager(32, BS)
    a = list(range(10))  # 2 full blocks + 2 tokens
    assert run(kv, "a", a) == 0
    kv.free("a")
    assert kv.num_cached_blocks == 2 and kv.num_used_blocks == 0
    assert kv.num_free_blocks == 32
    # a prefix ending inside a block: only the whole blocks before it are reused
    assert run(kv, "b", a[:7] + [99, 98]) == 4
    # the same prompt again: both full blocks (the tail is not a full block)
    assert run(kv, "c", a) == 8
    # a prompt of exactly the cached blocks: its last block is recomputed, into a new block
    assert run(kv, "d", a[:8]) == 4
    d_table = kv.block_ids("d")
    assert d_table[0] == kv.block_ids("c")[0] and d_table[1] != kv.block_ids("c")[1]
    assert kv.pool.ref_count(d_table[1]) == 1  # d writes its second block alone
    assert run(kv, "e", a[:5]) == 4
    assert run(kv, "f", a[:4]) == 0  # one block only: nothing may be reused
    for rid in "abcdef":
        kv.free(rid)
    kv.check_invariants()
    assert kv.num_used_blocks == 0


def test_blocks_are_shared_by_reference_and_kept_after_free() -> None:
    kv = PrefixCachingKVManager(16, BS)
    p = list(range(13))
    run(kv, "a", p)
    run(kv, "b", p)
    first = kv.block_ids("a")[:3]
    assert kv.block_ids("b")[:3] == first
    assert [kv.pool.ref_count(b) for b in first] == [3, 3, 3]  # a, b and the index
    kv.free("a")
    kv.free("b")
    assert [kv.pool.ref_count(b) for b in first] == [1, 1, 1]
    assert kv.num_evictable_blocks == 3 and kv.num_cached_blocks == 3
    assert kv.num_hit_tokens == 12 and kv.num_query_tokens == 26
    kv.check_invariants()


def test_uncommitted_blocks_are_never_matched() -> None:
    kv = PrefixCachingKVManager(16, BS)
    p = list(range(12))
    kv.match_prefix("a", p)
    kv.allocate_slots("a", 12)
    kv.commit_full_blocks("a", p, 6)  # only block 0 is computed so far
    assert kv.match_prefix("b", p) == 4
    kv.check_invariants()


def test_duplicate_content_keeps_one_cached_copy() -> None:
    kv = PrefixCachingKVManager(16, BS)
    p = list(range(9))
    for rid in ("a", "b"):  # admitted in the same step: neither can see the other's blocks
        assert kv.match_prefix(rid, p) == 0
        kv.allocate_slots(rid, 9)
    kv.commit_full_blocks("a", p, 9)
    kv.commit_full_blocks("b", p, 9)
    kv.check_invariants()
    assert kv.num_cached_blocks == 2
    kv.free("a")
    kv.free("b")
    assert kv.pool.num_free == 16 - 2  # b's private copies went back to the free list
    kv.check_invariants()


def test_salts_isolate_tenants() -> None:
    kv = PrefixCachingKVManager(32, BS)
    p = list(range(9))
    run(kv, "plain", p)
    assert run(kv, "t1", p, salt="tenant-1") == 0
    assert run(kv, "t1b", p, salt="tenant-1") == 8
    assert run(kv, "t2", p, salt="tenant-2") == 0
    assert run(kv, "empty", p, salt="") == 0  # "" is a salt too, distinct from None
    assert run(kv, "plain2", p) == 8
    assert set(kv.block_ids("plain2")[:2]) == set(kv.block_ids("plain")[:2])
    assert not set(kv.block_ids("t1b")[:2]) & set(kv.block_ids("plain")[:2])


def test_preempted_request_rematches_its_own_blocks() -> None:
    kv = PrefixCachingKVManager(16, BS)
    prompt = list(range(6))
    assert kv.match_prefix("a", prompt) == 0
    tokens = list(prompt)
    kv.allocate_slots("a", 6)
    kv.commit_full_blocks("a", tokens, 6)
    for t in (50, 51, 52, 53):  # decode: each sampled token is computed the next step
        tokens.append(t)
        kv.allocate_slots("a", len(tokens))
        kv.commit_full_blocks("a", tokens, len(tokens))
    kv.free("a")  # preempted: blocks freed, full ones stay cached
    assert kv.match_prefix("a", tokens) == 8  # prompt block + the block of generated tokens
    kv.free("a")
    kv.check_invariants()


def test_free_blocks_first_then_eviction() -> None:
    kv = PrefixCachingKVManager(6, BS, "lru")
    run(kv, "a", list(range(8)))  # 2 cached blocks
    kv.free("a")
    run(kv, "b", list(range(100, 116)))  # needs 4 = exactly the free ones: no eviction
    assert kv.num_evictions == 0 and kv.num_cached_blocks == 2 + 4
    kv.free("b")
    run(kv, "c", list(range(200, 208)))  # needs 2, none free: evicts 2 (LRU: a's)
    assert kv.num_evictions == 2
    assert kv.match_prefix("x", list(range(8))) == 0
    kv.free("x")
    kv.free("c")
    kv.check_invariants()


def test_allocation_fails_cleanly_when_in_use_blocks_fill_the_pool() -> None:
    kv = PrefixCachingKVManager(4, BS)
    run(kv, "a", list(range(12)))  # 3 blocks in use
    assert kv.match_prefix("b", list(range(50, 60))) == 0
    assert kv.allocate_slots("b", 10) is None  # 3 needed, 1 free, nothing evictable
    kv.free("b")
    kv.check_invariants()
    assert kv.num_used_blocks == 3


def test_keys_depend_on_the_process_secret() -> None:
    toks = list(range(BS))
    h1, h2 = KeyedBlockHasher(b"a" * 32), KeyedBlockHasher(b"b" * 32)
    assert h1.child(h1.root(None), toks) != h2.child(h2.root(None), toks)
    assert KeyedBlockHasher().root(None) != h1.root(None)  # the default is a random secret
    assert h1.root(None) != h1.root("") != h1.root("x")


@pytest.mark.parametrize("hasher", [KeyedBlockHasher(), ExactPrefixHasher()], ids=["keyed", "exact"])
def test_hashers_agree_on_matches(hasher) -> None:
    kv = PrefixCachingKVManager(64, BS, hasher=hasher)
    run(kv, "a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert run(kv, "b", [1, 2, 3, 4, 5, 6, 7, 0, 9]) == 4
    assert run(kv, "c", [1, 2, 3, 4, 5, 6, 7, 8, 0, 0]) == 8
    assert run(kv, "d", [0, 2, 3, 4, 5, 6, 7, 8, 9]) == 0


@pytest.mark.parametrize("hasher", [KeyedBlockHasher(), ExactPrefixHasher()], ids=["keyed", "exact"])
def test_iter_keys_equals_chained_child(hasher) -> None:
    toks = [7, 1, 0, 65535, 2**31 - 1, 3, 3, 3, 9, 9, 9, 9, 5]
    root = hasher.root("s")
    keys, parent = [], root
    for i in range(3):
        parent = hasher.child(parent, toks[i * BS:(i + 1) * BS])
        keys.append(parent)
    assert list(hasher.iter_keys(root, toks, BS, 0, 3)) == keys
    assert list(hasher.iter_keys(keys[0], toks, BS, 1, 3)) == keys[1:]
    assert list(hasher.iter_keys(root, toks, BS, 2, 2)) == []
    assert len(set(keys)) == 3
