"""BlockPool and KVCacheManager against a brute-force model (hypothesis state machine)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from titaninfer.kv import BlockPool, KVCacheManager
from titaninfer.kv.manager import blocks_needed


def test_allocate_and_free_round_trip():
    pool = BlockPool(4)
    a = pool.allocate(3)
    assert len(set(a)) == 3 and pool.num_free == 1
    with pytest.raises(RuntimeError):
        pool.allocate(2)
    pool.share(a[:1])
    assert pool.free(a) == a[1:]  # a[0] still has a reference
    assert pool.free(a[:1]) == a[:1]
    assert pool.num_free == 4
    with pytest.raises(RuntimeError, match="double free"):
        pool.free(a[:1])
    pool.check_invariants()


class PoolMachine(RuleBasedStateMachine):
    """The model: a dict block -> ref count; every operation must agree with it."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 12
        self.pool = BlockPool(self.n)
        self.model: dict[int, int] = {}

    @rule(k=st.integers(0, 5))
    def allocate(self, k: int) -> None:
        free_before = self.n - len(self.model)
        if k > free_before:
            with pytest.raises(RuntimeError):
                self.pool.allocate(k)
            return
        got = self.pool.allocate(k)
        assert len(set(got)) == k
        for b in got:
            assert b not in self.model
            self.model[b] = 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def share(self, data: st.DataObject) -> None:
        b = data.draw(st.sampled_from(sorted(self.model)))
        self.pool.share([b])
        self.model[b] += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        b = data.draw(st.sampled_from(sorted(self.model)))
        released = self.pool.free([b])
        self.model[b] -= 1
        if self.model[b] == 0:
            del self.model[b]
            assert released == [b]
        else:
            assert released == []

    @rule(b=st.integers(0, 11))
    def free_unowned_raises(self, b: int) -> None:
        if b not in self.model:
            with pytest.raises(RuntimeError):
                self.pool.free([b])

    @invariant()
    def agrees(self) -> None:
        self.pool.check_invariants()
        assert self.pool.num_free == self.n - len(self.model)
        for b in range(self.n):
            assert self.pool.ref_count(b) == self.model.get(b, 0)


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


class ManagerMachine(RuleBasedStateMachine):
    """Block tables: each request holds exactly ceil(tokens / block_size) blocks, tables
    never share a block, and free gives everything back."""

    def __init__(self) -> None:
        super().__init__()
        self.bs = 4
        self.kv = KVCacheManager(num_blocks=10, block_size=self.bs)
        self.tokens: dict[str, int] = {}

    @rule(rid=st.sampled_from("abcde"), grow=st.integers(1, 13))
    def allocate(self, rid: str, grow: int) -> None:
        target = self.tokens.get(rid, 0) + grow
        have = blocks_needed(self.tokens.get(rid, 0), self.bs)
        need = blocks_needed(target, self.bs) - have
        free = self.kv.num_free_blocks
        new = self.kv.allocate_slots(rid, target)
        if need > free:
            assert new is None
            assert self.kv.num_free_blocks == free
        else:
            assert new is not None and len(new) == max(0, need)
            self.tokens[rid] = target

    @rule(rid=st.sampled_from("abcde"))
    def free(self, rid: str) -> None:
        self.kv.free(rid)
        self.tokens.pop(rid, None)

    @invariant()
    def consistent(self) -> None:
        self.kv.check_invariants()
        seen: set[int] = set()
        for rid, n in self.tokens.items():
            table = self.kv.block_ids(rid)
            assert len(table) == blocks_needed(n, self.bs)
            assert not seen & set(table)
            seen |= set(table)
        assert self.kv.num_used_blocks == len(seen)


TestManagerMachine = ManagerMachine.TestCase
TestManagerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
