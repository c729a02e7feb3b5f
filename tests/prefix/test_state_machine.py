"""PrefixCachingKVManager against a brute-force model (hypothesis state machine).

The model keeps cached blocks in a dict keyed by the literal (salt, token prefix) and
derives everything else from the request tables: what a prompt must match, which blocks
are free, evictable or in use, and each block's reference count. Random admissions (with
or without a salt), prefill chunks, decode tokens, preemptions, re-admissions and finishes
drive the manager; after every step the manager must agree with the model, no block in use
may have been evicted, eviction takes free blocks first, and (for LRU) the victims must be
exactly the blocks released longest ago.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from titaninfer.prefix import ExactPrefixHasher, KeyedBlockHasher, PrefixCachingKVManager

BS = 2
NUM_BLOCKS = 8
MAX_LEN = 14
TOKENS = st.lists(st.integers(0, 2), min_size=1, max_size=12)
SALTS = st.sampled_from([None, "tenant-a", "tenant-b"])


@dataclass
class ModelRequest:
    tokens: list[int]
    salt: str | None
    table: list[int] = field(default_factory=list)
    computed: int = 0
    committed: int = 0  # full blocks offered to the index


class PrefixCacheMachine(RuleBasedStateMachine):
    policy_name = "lru"
    hasher_factory = staticmethod(KeyedBlockHasher)

    def __init__(self) -> None:
        super().__init__()
        self.kv = PrefixCachingKVManager(NUM_BLOCKS, BS, self.policy_name, hasher=self.hasher_factory())
        self.cached: dict[tuple, int] = {}  # (salt, token prefix) -> block id
        self.reqs: dict[str, ModelRequest] = {}
        self.preempted: list[tuple[list[int], str | None]] = []
        self.released_at: dict[int, int] = {}  # block -> release clock (LRU's order)
        self.clock = 0
        self.next_id = 0

    # ------------------------------------------------------------------ model helpers
    def key(self, salt: str | None, tokens: list[int], num_blocks: int) -> tuple:
        return (salt, tuple(tokens[:num_blocks * BS]))

    def in_use(self) -> set[int]:
        return {b for r in self.reqs.values() for b in r.table}

    def expected_match(self, tokens: list[int], salt: str | None) -> list[int]:
        out = []
        for j in range(1, (len(tokens) - 1) // BS + 1):
            b = self.cached.get(self.key(salt, tokens, j))
            if b is None:
                break
            out.append(b)
        return out

    def release(self, rid: str) -> None:
        r = self.reqs.pop(rid)
        self.kv.free(rid)
        held = self.in_use()
        cached_blocks = set(self.cached.values())
        for b in reversed(r.table):  # the manager releases tail first
            if b in cached_blocks and b not in held:
                self.clock += 1
                self.released_at[b] = self.clock

    def allocate(self, rid: str, target: int) -> bool:
        r = self.reqs[rid]
        held = self.in_use()
        cached_blocks = set(self.cached.values())
        evictable = cached_blocks - held
        num_free = NUM_BLOCKS - len(held | cached_blocks)
        need = -(-target // BS) - len(r.table)
        new = self.kv.allocate_slots(rid, target)
        if need > num_free + len(evictable):
            assert new is None
            assert set(self.cached.values()) == {b for b in cached_blocks if self.kv.index.key_of(b) is not None}
            return False
        assert new is not None and len(new) == max(need, 0)
        assert not set(new) & held, "handed out a block that is in use"
        evicted = {b for b in cached_blocks if self.kv.index.key_of(b) is None}
        assert evicted <= evictable, "evicted a block in use"
        assert len(evicted) == max(0, need - num_free), "evicted while free blocks remained"
        if self.policy_name == "lru" and evicted:
            oldest = sorted(evictable, key=self.released_at.__getitem__)[:len(evicted)]
            assert evicted == set(oldest), "LRU must evict the blocks released longest ago"
        self.cached = {k: b for k, b in self.cached.items() if b not in evicted}
        r.table.extend(new)
        return True

    def commit(self, rid: str) -> None:
        r = self.reqs[rid]
        self.kv.commit_full_blocks(rid, list(r.tokens), r.computed)
        for j in range(r.committed, r.computed // BS):
            self.cached.setdefault(self.key(r.salt, r.tokens, j + 1), r.table[j])
        r.committed = max(r.committed, r.computed // BS)

    def admit(self, tokens: list[int], salt: str | None, chunk: int) -> None:
        rid = f"r{self.next_id}"
        self.next_id += 1
        expected = self.expected_match(tokens, salt)
        got = self.kv.match_prefix(rid, list(tokens), salt)
        assert got == len(expected) * BS
        assert got <= len(tokens) - 1
        assert self.kv.block_ids(rid) == expected
        salts_of = {b: k[0] for k, b in self.cached.items()}
        assert all(salts_of[b] == salt for b in expected), "a salted request matched another tenant"
        self.reqs[rid] = ModelRequest(list(tokens), salt, list(expected), got, len(expected))
        if not self.allocate(rid, min(len(tokens), got + chunk)):
            self.release(rid)  # admission failed: undo the match (scheduler's _undo_match)
            return
        self.reqs[rid].computed = min(len(tokens), got + chunk)
        self.commit(rid)

    # ------------------------------------------------------------------ rules
    @rule(tokens=TOKENS, salt=SALTS, chunk=st.integers(1, 12))
    def admit_new(self, tokens: list[int], salt: str | None, chunk: int) -> None:
        self.admit(tokens, salt, chunk)

    @precondition(lambda self: self.preempted)
    @rule(data=st.data(), chunk=st.integers(1, 12))
    def readmit_preempted(self, data: st.DataObject, chunk: int) -> None:
        i = data.draw(st.integers(0, len(self.preempted) - 1))
        tokens, salt = self.preempted.pop(i)
        self.admit(tokens, salt, chunk)

    @precondition(lambda self: self.reqs)
    @rule(data=st.data(), chunk=st.integers(1, 6), token=st.integers(0, 2))
    def step(self, data: st.DataObject, chunk: int, token: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.reqs)))
        r = self.reqs[rid]
        if r.computed == len(r.tokens):
            if len(r.tokens) >= MAX_LEN:
                self.release(rid)  # finished by length
                return
            r.tokens.append(token)  # the sampled token, computed this step
        target = min(len(r.tokens), r.computed + chunk)
        if not self.allocate(rid, target):
            self.preempted.append((list(r.tokens), r.salt))
            self.release(rid)
            return
        r.computed = target
        self.commit(rid)

    @precondition(lambda self: self.reqs)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        self.release(data.draw(st.sampled_from(sorted(self.reqs))))

    # ------------------------------------------------------------------ invariants
    @invariant()
    def accounting_matches_the_model(self) -> None:
        kv = self.kv
        kv.check_invariants()
        held = self.in_use()
        cached_blocks = set(self.cached.values())
        assert kv.num_cached_blocks == len(self.cached) == len(cached_blocks)
        assert kv.num_used_blocks == len(held)
        assert kv.num_free_blocks == NUM_BLOCKS - len(held)
        assert kv.num_evictable_blocks == len(cached_blocks - held)
        for b in range(NUM_BLOCKS):
            refs = sum(r.table.count(b) for r in self.reqs.values()) + (b in cached_blocks)
            assert kv.pool.ref_count(b) == refs >= 0
        for rid, r in self.reqs.items():
            assert kv.block_ids(rid) == r.table


SETTINGS = settings(max_examples=60, stateful_step_count=30, deadline=None)


def _machine(policy: str, hasher) -> type:
    return type(f"Machine_{policy}", (PrefixCacheMachine,),
                {"policy_name": policy, "hasher_factory": staticmethod(hasher)})


TestLRUKeyed = SETTINGS(_machine("lru", KeyedBlockHasher)).TestCase
TestLRUExact = SETTINGS(_machine("lru", ExactPrefixHasher)).TestCase
TestLFU = SETTINGS(_machine("lfu", KeyedBlockHasher)).TestCase
TestARC = SETTINGS(_machine("arc", KeyedBlockHasher)).TestCase
TestS3FIFO = SETTINGS(_machine("s3fifo", KeyedBlockHasher)).TestCase
